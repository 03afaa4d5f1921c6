//! Role switching over real sockets: a leaf under `--role auto` that the network needs becomes
//! an ultrapeer and is taken as one; a switch says Bye 203 as gtk-gnutella does.

mod common;

use std::time::Duration;

use common::{Peer, temp_dir};
use servent::handshake::Role;
use servent::net::{Node, NodeConfig};
use servent::overlay::{Observation, Thresholds};

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..400 {
        if ok() {
            return;
        }
        async_std::task::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

fn config(role: Role) -> NodeConfig {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut cfg = NodeConfig::new("127.0.0.1:0".parse().unwrap(), temp_dir("roles"));
    cfg.role = role;
    cfg.accept_private = true;
    cfg.tick = Duration::from_millis(100);
    cfg
}

/// Thresholds eased to seconds, so the rules act within a test: no uptime needed, a score of
/// 25 (reachability alone), short of ultrapeers for one second.
fn eased() -> Thresholds {
    Thresholds {
        score: 25,
        min_uptime: Duration::ZERO,
        switch_min: Duration::ZERO,
        short_of_ultrapeers: Duration::from_secs(1),
        ..Thresholds::default()
    }
}

#[async_std::test]
async fn a_needed_leaf_promotes_and_is_taken_as_an_ultrapeer() {
    // An ultrapeer with no room for leaves: our leaf is refused and stays short of ultrapeers.
    let mut a = config(Role::Ultrapeer);
    a.max_leaves = 0;
    let a = Node::start(a).await.unwrap();
    let mut b = config(Role::Leaf);
    b.auto_role = true;
    b.thresholds = eased();
    b.peers = vec![a.listen_addr()];
    let b = Node::start(b).await.unwrap();
    assert_eq!(b.role(), Role::Leaf);
    // Not yet reachable: nothing happens, however short of ultrapeers.
    async_std::task::sleep(Duration::from_millis(1500)).await;
    assert_eq!(b.role(), Role::Leaf);
    assert!(a.connections().is_empty(), "A has no leaf slot");
    let rep = b.reputation();
    assert!(
        !rep.eligible && rep.summary.contains("not reachable"),
        "{rep:?}"
    );
    b.observe(Observation::Firewalled(false));
    wait_for("B to promote", || b.role() == Role::Ultrapeer).await;
    // Now A takes B as an ultrapeer (its back-off on A ended with the switch).
    wait_for("A to link B as an ultrapeer", || {
        a.connections()
            .iter()
            .any(|c| c.role == Role::Ultrapeer && c.addr.ip().is_loopback())
    })
    .await;
    assert!(b.connections().iter().all(|c| c.role == Role::Ultrapeer));
    // And B takes leaves.
    let mut c = config(Role::Leaf);
    c.peers = vec![b.listen_addr()];
    let c = Node::start(c).await.unwrap();
    wait_for("B to take C as a leaf", || {
        b.connections().iter().any(|l| l.role == Role::Leaf)
    })
    .await;
    assert_eq!(c.connections().len(), 1);
    assert_eq!(c.connections()[0].role, Role::Ultrapeer);
    let rep = b.reputation();
    assert!(rep.eligible, "{rep:?}");
    assert_eq!(rep.parts.iter().map(|p| p.max).sum::<u32>(), 100);
}

#[async_std::test]
async fn a_switch_to_leaf_says_goodbye_203_to_every_peer() {
    let mut cfg = config(Role::Ultrapeer);
    cfg.auto_role = true;
    let node = Node::start(cfg).await.unwrap();
    let mut leaf = Peer::connect(node.listen_addr(), Role::Leaf, true).await;
    let mut up = Peer::connect(node.listen_addr(), Role::Ultrapeer, false).await;
    wait_for("two links", || node.connections().len() == 2).await;
    node.switch_role(Role::Leaf, "test");
    for p in [&mut leaf, &mut up] {
        assert!(p.closed(Duration::from_secs(5)).await, "link closed");
        assert_eq!(p.bye_code(), Some(203));
    }
    assert_eq!(node.role(), Role::Leaf);
    // A leaf now: another servent's connection is refused as a leaf refuses (shielded).
    let mut s = async_std::net::TcpStream::connect(node.listen_addr())
        .await
        .unwrap();
    let local = servent::handshake::LocalInfo {
        user_agent: "test-peer/1".into(),
        role: Role::Ultrapeer,
        guid: servent::wire::ServentId::random(),
        listen: None,
        compress: false,
        degree: 32,
        max_ttl: 4,
    };
    let refused = servent::handshake::driver::connect(&mut s, &local, None).await;
    assert!(refused.is_err(), "a leaf takes no incoming links");
}
