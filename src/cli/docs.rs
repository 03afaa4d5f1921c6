//! Shell completions and the man page, written from the command line's own definitions
//! (argh's `ArgsInfo`), so that neither can fall behind a new subcommand or flag.

use argh::{CommandInfoWithArgs, FlagInfo, FlagInfoKind};

/// A shell we write completions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl std::str::FromStr for Shell {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bash" => Ok(Shell::Bash),
            "zsh" => Ok(Shell::Zsh),
            "fish" => Ok(Shell::Fish),
            _ => Err(format!("no completions for {s:?}: bash, zsh or fish")),
        }
    }
}

/// The completion script for `shell`, for the command `info` describes.
pub fn completions(info: &CommandInfoWithArgs, shell: Shell) -> String {
    match shell {
        Shell::Bash => bash(info),
        Shell::Zsh => zsh(info),
        Shell::Fish => fish(info),
    }
}

/// The flags people may type (argh lists `--help` among them).
fn flags<'a>(c: &'a CommandInfoWithArgs) -> Vec<&'a FlagInfo<'a>> {
    c.flags.iter().filter(|f| !f.hidden).collect()
}

/// An option whose value is a file or folder name, so the shell completes paths for it.
fn takes_path(f: &FlagInfo) -> bool {
    let FlagInfoKind::Option { arg_name } = f.kind else {
        return false;
    };
    ["dir", "share", "out", "config", "file"]
        .iter()
        .any(|w| arg_name.contains(w))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

fn bash(info: &CommandInfoWithArgs) -> String {
    let name = info.name;
    let subs: Vec<&str> = info.commands.iter().map(|c| c.name).collect();
    let mut out = format!(
        "# bash completion for {name}: source it, or put it in \
         ~/.local/share/bash-completion/completions/{name}\n\
         _{name}() {{\n\
         \x20   local cur prev sub opts\n\
         \x20   cur=\"${{COMP_WORDS[COMP_CWORD]}}\"\n\
         \x20   prev=\"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         \x20   if [ \"$COMP_CWORD\" -eq 1 ]; then\n\
         \x20       COMPREPLY=($(compgen -W \"{} --help --version\" -- \"$cur\"))\n\
         \x20       return\n\
         \x20   fi\n\
         \x20   sub=\"${{COMP_WORDS[1]}}\"\n\
         \x20   case \"$sub\" in\n",
        subs.join(" ")
    );
    for c in &info.commands {
        let fl = flags(&c.command);
        let paths: Vec<String> = fl
            .iter()
            .filter(|f| takes_path(f))
            .map(|f| f.long.to_string())
            .collect();
        let words: Vec<&str> = fl.iter().map(|f| f.long).collect();
        out += &format!("        {})\n", c.name);
        if !paths.is_empty() {
            out += &format!(
                "            case \"$prev\" in {}) COMPREPLY=($(compgen -f -- \"$cur\")); \
                 return;; esac\n",
                paths.join("|")
            );
        }
        out += &format!("            opts=\"{}\" ;;\n", words.join(" "));
    }
    out += &format!(
        "        *) opts=\"--help\" ;;\n\
         \x20   esac\n\
         \x20   COMPREPLY=($(compgen -W \"$opts\" -- \"$cur\"))\n\
         }}\n\
         complete -o default -F _{name} {name}\n"
    );
    out
}

/// Text safe inside a zsh `_arguments` spec or `_describe` item.
fn zsh_text(s: &str) -> String {
    first_line(s)
        .chars()
        .filter(|c| !matches!(c, '[' | ']' | ':' | '\'' | '\\' | '`' | '$'))
        .collect()
}

fn zsh(info: &CommandInfoWithArgs) -> String {
    let name = info.name;
    let mut out = format!(
        "#compdef {name}\n# zsh completion for {name}: put it in a folder of $fpath as _{name}\n\
         _{name}() {{\n    local -a subcommands\n    subcommands=(\n"
    );
    for c in &info.commands {
        out += &format!("        '{}:{}'\n", c.name, zsh_text(c.command.description));
    }
    out += "    )\n    if (( CURRENT == 2 )); then\n        _describe 'command' subcommands\n        \
            return\n    fi\n    case $words[2] in\n";
    for c in &info.commands {
        out += &format!("        {})\n            _arguments \\\n", c.name);
        for f in flags(&c.command) {
            let what = zsh_text(f.description);
            let value = match f.kind {
                FlagInfoKind::Switch => String::new(),
                FlagInfoKind::Option { arg_name } if takes_path(f) => {
                    format!(":{arg_name}:_files")
                }
                FlagInfoKind::Option { arg_name } => format!(":{arg_name}: "),
            };
            out += &format!("                '{}[{what}]{value}' \\\n", f.long);
        }
        out += "                '*::argument:_files'\n            ;;\n";
    }
    out += &format!("    esac\n}}\n_{name} \"$@\"\n");
    out
}

/// Text safe inside single quotes for fish.
fn fish_text(s: &str) -> String {
    first_line(s).replace('\\', "\\\\").replace('\'', "\\'")
}

fn fish(info: &CommandInfoWithArgs) -> String {
    let name = info.name;
    let mut out = format!(
        "# fish completion for {name}: put it in ~/.config/fish/completions/{name}.fish\n\
         complete -c {name} -f\n\
         complete -c {name} -n __fish_use_subcommand -l version -d 'print the version'\n"
    );
    for c in &info.commands {
        out += &format!(
            "complete -c {name} -n __fish_use_subcommand -a {} -d '{}'\n",
            c.name,
            fish_text(c.command.description)
        );
    }
    for c in &info.commands {
        let when = format!("'__fish_seen_subcommand_from {}'", c.name);
        for f in flags(&c.command) {
            let long = f.long.trim_start_matches("--");
            let value = match f.kind {
                FlagInfoKind::Switch => "",
                FlagInfoKind::Option { .. } if takes_path(f) => " -r -F",
                FlagInfoKind::Option { .. } => " -r",
            };
            out += &format!(
                "complete -c {name} -n {when} -l {long}{value} -d '{}'\n",
                fish_text(f.description)
            );
        }
    }
    out
}

/// Text for roff: backslashes and dashes escaped, other than ASCII as `\[uXXXX]` (troff reads
/// bytes), and no line starting as a request.
fn roff(s: &str) -> String {
    let ascii: String = s
        .chars()
        .map(|c| match c {
            '\\' => "\\e".to_string(),
            '-' => "\\-".to_string(),
            c if c.is_ascii() => c.to_string(),
            c => format!("\\[u{:04X}]", u32::from(c)),
        })
        .collect();
    ascii
        .lines()
        .map(|l| {
            let l = l.trim();
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The man page (section 1), in roff; `summary` is its one-line NAME.
pub fn man(info: &CommandInfoWithArgs, version: &str, summary: &str) -> String {
    let name = info.name;
    let mut out = format!(
        ".TH {} 1 \"\" \"{name} {version}\" \"User Commands\"\n.SH NAME\n{name} \\- {}\n\
         .SH SYNOPSIS\n.B {name}\n\\fICOMMAND\\fR [\\fIOPTIONS\\fR]\n.br\n.B {name}\n\
         \\-\\-version | \\-\\-help\n.SH DESCRIPTION\n{}\n.SH COMMANDS\n",
        name.to_uppercase(),
        roff(summary),
        roff(info.description),
    );
    for c in &info.commands {
        let cmd = &c.command;
        let positionals: String = cmd
            .positionals
            .iter()
            .map(|p| format!(" \\fI{}\\fR", roff(p.name)))
            .collect();
        out += &format!(
            ".SS \"{name} {}\"\n.B {name} {}\n[\\fIOPTIONS\\fR]{positionals}\n.PP\n{}\n",
            c.name,
            c.name,
            roff(cmd.description)
        );
        for p in cmd.positionals {
            out += &format!(".TP\n.I {}\n{}\n", roff(p.name), roff(p.description));
        }
        for f in flags(cmd) {
            let value = match f.kind {
                FlagInfoKind::Switch => String::new(),
                FlagInfoKind::Option { arg_name } => format!(" \\fI{}\\fR", roff(arg_name)),
            };
            out += &format!(".TP\n.B {}{value}\n{}\n", roff(f.long), roff(f.description));
        }
        for n in cmd.notes {
            out += &format!(".PP\n{}\n", roff(n));
        }
        for e in cmd.examples {
            out += &format!(".PP\nExample:\n.RS\n.nf\n{}\n.fi\n.RE\n", roff(e));
        }
    }
    out += &format!(
        ".SH ENVIRONMENT\n.TP\n.B RUST_LOG\nthe log level (error, warn, info, debug, trace)\n\
         .TP\n.B SERVENT_\\fIKEY\\fR\nany setting of the settings file, by its key in capitals \
         (\\fB{name} run \\-\\-check\\-config\\fR shows them)\n"
    );
    out
}
