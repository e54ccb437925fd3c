//! Man pages and shell completions from a clap command tree. Each binary parses its command
//! line with [`parse_or_generate`], which adds a hidden `generate-docs DIR` subcommand, so
//! `build-debs.sh` generates them with the very binary it packages. The subcommand is added
//! beside the binary's own definition, not in it, so neither the pages nor the completions
//! mention it.

use std::path::{Path, PathBuf};

use clap::{Arg, ArgMatches, Command, Parser};
use clap_complete::Shell;

/// The hidden subcommand's name.
pub const GENERATE_DOCS: &str = "generate-docs";

/// What a command line asks for.
#[derive(Debug)]
pub enum Invocation<P> {
    /// The binary's own command.
    Run(P),
    /// `generate-docs DIR`: write the pages and completions into DIR.
    GenerateDocs(PathBuf),
}

fn with_generator(command: Command) -> Command {
    command.subcommand(
        Command::new(GENERATE_DOCS)
            .hide(true)
            .about("Write man pages (DIR/man/man1) and shell completions (DIR/completions)")
            .arg(
                Arg::new("dir")
                    .required(true)
                    .value_parser(clap::value_parser!(PathBuf)),
            ),
    )
}

fn invocation<P: Parser>(mut matches: ArgMatches) -> Result<Invocation<P>, clap::Error> {
    if let Some((GENERATE_DOCS, sub)) = matches.subcommand() {
        let dir = sub.get_one::<PathBuf>("dir").cloned().unwrap_or_default();
        return Ok(Invocation::GenerateDocs(dir));
    }
    P::from_arg_matches_mut(&mut matches)
        .map(Invocation::Run)
        .map_err(|e| e.format(&mut P::command()))
}

/// Parses `args` like `P::try_parse_from`, plus the hidden `generate-docs DIR`.
pub fn try_parse_from<P, I, T>(args: I) -> Result<Invocation<P>, clap::Error>
where
    P: Parser,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    invocation(with_generator(P::command()).try_get_matches_from(args)?)
}

/// Parses the process's command line like `P::parse()` (usage errors exit with clap's
/// message); `generate-docs DIR` writes `P`'s pages and completions, lists them and exits.
pub fn parse_or_generate<P: Parser>() -> P {
    let parsed = with_generator(P::command())
        .try_get_matches()
        .and_then(invocation::<P>);
    match parsed {
        Ok(Invocation::Run(program)) => program,
        Ok(Invocation::GenerateDocs(dir)) => std::process::exit(generate(P::command(), &dir)),
        Err(e) => e.exit(),
    }
}

fn generate(command: Command, dir: &Path) -> i32 {
    let name = command.get_name().to_string();
    match write_docs(command, dir) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            0
        }
        Err(e) => {
            eprintln!("{name}: error: {e}");
            1
        }
    }
}

/// Writing the pages or completions failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {what} under {}: {source}", dir.display())]
pub struct DocsError {
    what: &'static str,
    dir: PathBuf,
    source: std::io::Error,
}

/// The shells completions are generated for, and the file name each expects
/// (`NAME.bash`, `_NAME`, `NAME.fish`).
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Writes `dir/man/man1/NAME.1` (and `NAME-SUB.1` per visible subcommand) and
/// `dir/completions/{NAME.bash,_NAME,NAME.fish}` for `command`; returns the files written.
pub fn write_docs(command: Command, dir: &Path) -> Result<Vec<PathBuf>, DocsError> {
    let mut command = without_help_subcommands(command);
    // Subcommand pages name their parent ("ota-client-install"), which needs the built tree.
    command.build();
    let name = command.get_name().to_string();
    let man = dir.join("man/man1");
    let completions = dir.join("completions");
    let err = |what: &'static str, dir: &Path| {
        let dir = dir.to_path_buf();
        move |source| DocsError { what, dir, source }
    };
    std::fs::create_dir_all(&man).map_err(err("man pages", &man))?;
    std::fs::create_dir_all(&completions).map_err(err("completions", &completions))?;
    clap_mangen::generate_to(command.clone(), &man).map_err(err("man pages", &man))?;
    let mut written = Vec::new();
    for shell in SHELLS {
        let path = clap_complete::generate_to(shell, &mut command, &name, &completions)
            .map_err(err("completions", &completions))?;
        written.push(path);
    }
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man)
        .map_err(err("man pages", &man))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    written.extend(pages);
    Ok(written)
}

/// `help` subcommands repeat every page under another name (`ota-server-help-rollout.1`).
fn without_help_subcommands(command: Command) -> Command {
    command
        .disable_help_subcommand(true)
        .mut_subcommands(without_help_subcommands)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Subcommand};

    /// A tiny CLI shaped like ours: a global flag, a visible and a hidden subcommand.
    #[derive(Parser, Debug)]
    #[command(name = "demo-tool", version, about = "Does demo things")]
    struct Demo {
        /// Configuration file.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(Subcommand, Debug)]
    enum Cmd {
        /// Installs a thing.
        Install {
            /// The thing.
            bundle: String,
        },
    }

    #[test]
    fn writes_pages_per_subcommand_and_three_completions_without_hidden_commands() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_docs(Demo::command(), dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        for want in [
            "completions/demo-tool.bash",
            "completions/_demo-tool",
            "completions/demo-tool.fish",
            "man/man1/demo-tool.1",
            "man/man1/demo-tool-install.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.contains("generate-docs")),
            "a hidden command got a page: {names:?}"
        );
        assert!(
            !names.iter().any(|n| n.contains("-help")),
            "the help subcommand got pages: {names:?}"
        );
        let page = std::fs::read_to_string(dir.path().join("man/man1/demo-tool.1")).unwrap();
        assert!(page.contains(".TH demo-tool 1"), "{page}");
        assert!(page.contains("Does demo things"));
        assert!(page.contains("\\-\\-config"));
        let bash = std::fs::read_to_string(dir.path().join("completions/demo-tool.bash")).unwrap();
        assert!(bash.contains("install"));
        assert!(!bash.contains("generate-docs"));
    }

    #[test]
    fn an_unwritable_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = write_docs(Demo::command(), &file).unwrap_err().to_string();
        assert!(err.contains("not-a-dir"), "{err}");
    }

    #[test]
    fn generate_docs_is_parsed_beside_the_programs_own_commands() {
        match try_parse_from::<Demo, _, _>(["demo-tool", "generate-docs", "/tmp/out"]).unwrap() {
            Invocation::GenerateDocs(dir) => assert_eq!(dir, PathBuf::from("/tmp/out")),
            Invocation::Run(_) => panic!("generate-docs ran the program"),
        }
        match try_parse_from::<Demo, _, _>(["demo-tool", "--config", "c", "install", "x"]).unwrap()
        {
            Invocation::Run(Demo {
                config,
                command: Cmd::Install { bundle },
            }) => {
                assert_eq!(config, Some(PathBuf::from("c")));
                assert_eq!(bundle, "x");
            }
            other => panic!("{other:?}"),
        }
        let err = try_parse_from::<Demo, _, _>(["demo-tool", "frobnicate"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidSubcommand);
        let help = with_generator(Demo::command()).render_help().to_string();
        assert!(!help.contains("generate-docs"), "{help}");
    }
}
