//! The `servent` command line: argh parses, env_logger logs, each subcommand does one thing.

use std::io::Read;
use std::process::ExitCode;

use argh::FromArgs;
use servent::wire::{self, Descriptor, Framed};

/// servent: a Gnutella 0.6 servent.
///
/// Logging goes to stderr and is set with RUST_LOG (for example RUST_LOG=debug).
#[derive(FromArgs)]
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Decode(DecodeArgs),
}

/// Decode Gnutella descriptors given as hex and print each as JSON.
#[derive(FromArgs)]
#[argh(
    subcommand,
    name = "decode",
    note = "The hex may hold several descriptors back to back, header included. Spaces, \
newlines and '|' are ignored, so bytes copied from a capture or from PROTOCOL.md paste as they \
are. Exits 1 if the input is not hex or a descriptor is malformed, saying why and giving a \
stable error code such as [hit-count-overrun].",
    example = "echo '5a1f0e3c8b27d4e9ff1c6a2b7d3e9f00 00 01 00 00 00 00 00' | servent decode"
)]
struct DecodeArgs {
    /// print one JSON object per line instead of pretty-printed JSON
    #[argh(switch)]
    compact: bool,

    /// the hex to decode; read from standard input when absent
    #[argh(positional)]
    hex: Option<String>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli: Cli = argh::from_env();
    let result = match cli.command {
        Command::Decode(args) => decode(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("servent: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'|')
        .collect();
    if let Some(bad) = digits.iter().position(|b| !b.is_ascii_hexdigit()) {
        return Err(format!(
            "input is not hex: {:?} at hex digit {} (only 0-9, a-f, spaces and '|' may appear)",
            digits[bad] as char,
            bad + 1
        ));
    }
    if digits.len() % 2 != 0 {
        return Err(format!(
            "input has an odd number of hex digits ({}): a byte is cut in half",
            digits.len()
        ));
    }
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(&digits)
        .map_err(|e| format!("input is not hex: {e}"))
}

fn decode(args: DecodeArgs) -> Result<(), String> {
    let text = match args.hex {
        Some(h) => h,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            s
        }
    };
    let bytes = parse_hex(&text)?;
    if bytes.is_empty() {
        return Err("no hex given: pass it as an argument or on standard input".into());
    }
    let mut offset = 0;
    let mut index = 1;
    while offset < bytes.len() {
        let here = format!("descriptor {index} (byte offset {offset})");
        let frame = match wire::frame(&bytes[offset..]) {
            Ok(Framed::Frame(f)) => f,
            Ok(Framed::Incomplete { needed }) => {
                return Err(format!(
                    "{here}: input ends {needed} bytes short of a whole descriptor"
                ));
            }
            Err(e) => return Err(format!("{here}: {e} [{}]", e.code())),
        };
        let d = Descriptor::decode(&frame).map_err(|e| format!("{here}: {e} [{}]", e.code()))?;
        let json = if args.compact {
            serde_json::to_string(&d)
        } else {
            serde_json::to_string_pretty(&d)
        }
        .map_err(|e| format!("{here}: cannot show as JSON: {e}"))?;
        println!("{json}");
        offset += frame.len();
        index += 1;
    }
    Ok(())
}
