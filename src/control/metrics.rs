//! `/metrics` in the Prometheus text exposition format (version 0.0.4): one `# HELP` and
//! `# TYPE` line per family, then its samples.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::Control;
use crate::handshake::Role;

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP servent_{name} {help}");
        let _ = writeln!(self.0, "# TYPE servent_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, v: u64) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "servent_{name} {v}");
        } else {
            let _ = writeln!(self.0, "servent_{name}{{{labels}}} {v}");
        }
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, v: u64) {
        self.family(name, kind, help);
        self.sample(name, "", v);
    }
}

pub(super) fn render(ctl: &Control) -> String {
    let node = ctl.servent.node();
    let mut o = Out(String::with_capacity(4096));
    let conns = node.connections();
    o.family("connections", "gauge", "Gnutella links by the peer's role.");
    for (role, label) in [(Role::Ultrapeer, "ultrapeer"), (Role::Leaf, "leaf")] {
        let n = conns.iter().filter(|c| c.role == role).count() as u64;
        o.sample("connections", &format!("role=\"{label}\""), n);
    }
    let links = node.link_stats();
    o.one(
        "link_bytes_received",
        "gauge",
        "Bytes read on the current links (as on the wire).",
        links.iter().map(|l| l.bytes_in).sum(),
    );
    o.one(
        "link_bytes_sent",
        "gauge",
        "Bytes written on the current links (as on the wire).",
        links.iter().map(|l| l.bytes_out).sum(),
    );
    let s = node.stats();
    for (name, help, v) in [
        (
            "messages_received_total",
            "Descriptors received.",
            s.received,
        ),
        (
            "queries_forwarded_total",
            "Queries forwarded to peers.",
            s.queries_forwarded,
        ),
        (
            "duplicates_total",
            "Descriptors dropped as already seen.",
            s.duplicates,
        ),
        (
            "dropped_ttl_total",
            "Descriptors dropped for their TTL.",
            s.dropped_ttl,
        ),
        (
            "unroutable_total",
            "Replies with no route back.",
            s.unroutable,
        ),
        ("malformed_total", "Malformed descriptors.", s.malformed),
        ("hits_routed_total", "Query hits routed.", s.hits_routed),
        ("pushes_routed_total", "Pushes routed.", s.pushes_routed),
    ] {
        o.one(name, "counter", help, v);
    }
    let up = ctl.servent.uploads();
    o.one(
        "uploads_active",
        "gauge",
        "Uploads in progress.",
        up.tracker.active() as u64,
    );
    o.one(
        "uploads_completed_total",
        "counter",
        "Uploads that sent their whole range.",
        up.completed.load(Ordering::Relaxed),
    );
    o.one(
        "upload_bytes_total",
        "counter",
        "File bytes uploaded.",
        up.bytes_sent.load(Ordering::Relaxed),
    );
    let downloads = ctl.downloads.list();
    o.family("downloads", "gauge", "Downloads by state.");
    for state in super::downloads::State::ALL {
        let n = downloads.iter().filter(|d| d.state == state).count() as u64;
        o.sample("downloads", &format!("state=\"{}\"", state.as_str()), n);
    }
    o.one(
        "download_bytes",
        "gauge",
        "Bytes held by the listed downloads.",
        downloads.iter().map(|d| d.bytes).sum(),
    );
    o.one(
        "searches_running",
        "gauge",
        "Searches running through the API.",
        ctl.searches.running() as u64,
    );
    let (files, bytes) = super::server::share_count(ctl);
    o.one("shared_files", "gauge", "Files shared.", files as u64);
    o.one("shared_bytes", "gauge", "Bytes shared.", bytes);
    o.one(
        "uptime_seconds",
        "gauge",
        "Seconds since the API started.",
        ctl.started.elapsed().as_secs(),
    );
    o.0
}
