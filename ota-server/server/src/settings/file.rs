//! The server's TOML config file. Its keys are `ota-server serve`'s long flag names, kebab-case, without the
//! leading `--` (`data-dir = "/var/lib/ota-server"`); the file is turned into command-line arguments placed in
//! front of the user's, so every flag (including ones added later) is a key with no extra code, and clap checks
//! the values exactly as on the command line. Precedence: command line > environment > file > default.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

/// Read when `--config` is not given and the file exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ota-server/config.toml";

/// Flags that are not keys: where the file is, and clap's own.
const NOT_KEYS: [&str; 3] = ["config", "help", "version"];

/// A config file that cannot be used; each names the file, and the key when one is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file cannot be read.
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML.
    #[error("config file {}: not valid TOML: {detail}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's words, on one line.
        detail: String,
    },
    /// A key that is no `serve` flag.
    #[error(
        "config file {}: unknown key '{key}' (keys are `ota-server serve` flags without the --, e.g. data-dir; \
         see docs/server-config.md)",
        path.display()
    )]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A value the flag does not accept.
    #[error("config file {}: key '{key}': {detail}", path.display())]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong with the value.
        detail: String,
    },
}

/// The flags of `serve` that can be config keys, in definition order.
pub fn keys(serve: &Command) -> Vec<&Arg> {
    serve
        .get_arguments()
        .filter(|a| a.get_long().is_some_and(|l| !NOT_KEYS.contains(&l)))
        .filter(|a| !a.is_positional())
        .collect()
}

/// The Markdown table of every key (docs/server-config.md holds it between `<!-- keys:begin -->` and
/// `<!-- keys:end -->`; a test of the binary checks the two agree, so the page cannot drift from the flags).
pub fn reference_table(serve: &Command) -> String {
    let mut out =
        String::from("| Key | Value | Default | Environment | Meaning |\n|---|---|---|---|---|\n");
    for arg in keys(serve) {
        let value = match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => "true / false".to_string(),
            action => {
                let name = arg
                    .get_value_names()
                    .and_then(|n| n.first())
                    .map_or_else(|| arg.get_id().as_str().to_uppercase(), ToString::to_string);
                if matches!(action, ArgAction::Append) || arg.get_value_delimiter().is_some() {
                    format!("list of {name}")
                } else {
                    name
                }
            }
        };
        let default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let cell = |s: String| {
            if s.is_empty() {
                "-".to_string()
            } else {
                format!("`{s}`")
            }
        };
        let help = arg
            .get_help()
            .map(|h| h.to_string().replace('\n', " ").replace('|', "\\|"))
            .unwrap_or_default();
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            arg.get_long().unwrap_or_default(),
            value,
            cell(default.join(",")),
            cell(
                arg.get_env()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            help
        ));
    }
    out
}

/// Whether the user set the argument `id` on the command line or through its environment variable (then the
/// file's value for it does not count).
pub fn set_by_user(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Reads the file at `path`; `Ok(None)` when `required` is false and it does not exist.
pub fn read(path: &Path, required: bool) -> Result<Option<String>, ConfigFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The command-line arguments the file `text` (at `path`, for messages) stands for, checked against the `serve`
/// command's definition. A key is left out when `user_set` says the user set it, or a flag it conflicts with
/// (so `admin-token` from the environment wins over the file's `admin-token-file`).
pub fn file_args(
    serve: &Command,
    text: &str,
    path: &Path,
    user_set: impl Fn(&str) -> bool,
) -> Result<Vec<OsString>, ConfigFileError> {
    let table: toml::Table =
        text.parse()
            .map_err(|e: toml::de::Error| ConfigFileError::Syntax {
                path: path.to_path_buf(),
                detail: e.to_string().replace('\n', " ").trim().to_string(),
            })?;
    let keys = keys(serve);
    let mut args = Vec::new();
    for (key, value) in &table {
        let arg = keys
            .iter()
            .find(|a| a.get_long() == Some(key.as_str()))
            .ok_or_else(|| ConfigFileError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
            })?;
        let bad = |detail: String| ConfigFileError::BadValue {
            path: path.to_path_buf(),
            key: key.clone(),
            detail,
        };
        let values = flag_values(arg, value).map_err(bad)?;
        check(serve, key, &values).map_err(bad)?;
        if user_set(arg.get_id().as_str()) || conflicts(serve, arg).any(|c| user_set(c.as_str())) {
            continue;
        }
        for v in values {
            args.push(match v {
                None => OsString::from(format!("--{key}")),
                Some(v) => OsString::from(format!("--{key}={v}")),
            });
        }
    }
    Ok(args)
}

/// The ids of the flags `arg` conflicts with, declared on either side.
fn conflicts<'a>(serve: &'a Command, arg: &'a Arg) -> impl Iterator<Item = &'a clap::Id> + 'a {
    serve.get_arguments().filter_map(move |other| {
        let declared = |a: &Arg, b: &Arg| {
            serve
                .get_arg_conflicts_with(a)
                .iter()
                .any(|c| c.get_id() == b.get_id())
        };
        (other.get_id() != arg.get_id() && (declared(arg, other) || declared(other, arg)))
            .then(|| other.get_id())
    })
}

/// The occurrences of a flag a TOML value stands for: `None` for a bare switch, `Some(value)` otherwise.
fn flag_values(arg: &Arg, value: &toml::Value) -> Result<Vec<Option<String>>, String> {
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => match value {
            toml::Value::Boolean(b) => {
                let on = *b == matches!(arg.get_action(), ArgAction::SetTrue);
                Ok(if on { vec![None] } else { vec![] })
            }
            _ => Err("expected true or false".to_string()),
        },
        ArgAction::Append => match value {
            toml::Value::Array(items) => items.iter().map(|v| scalar(v).map(Some)).collect(),
            v => Ok(vec![Some(scalar(v)?)]),
        },
        _ => match (value, arg.get_value_delimiter()) {
            (toml::Value::Array(items), Some(d)) => {
                let parts: Result<Vec<String>, String> = items.iter().map(scalar).collect();
                Ok(vec![Some(parts?.join(&d.to_string()))])
            }
            (toml::Value::Array(_), None) => Err("expected one value, not a list".to_string()),
            (v, _) => Ok(vec![Some(scalar(v)?)]),
        },
    }
}

fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(d) => Ok(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => {
            Err("expected a string, number or boolean".to_string())
        }
    }
}

/// Parses the flag alone, as clap would on the command line, and reports only what is wrong with its values
/// (not a flag it needs or conflicts with: those are judged on the whole command line).
fn check(serve: &Command, key: &str, values: &[Option<String>]) -> Result<(), String> {
    use clap::error::ErrorKind;
    let argv = std::iter::once(OsString::from("serve")).chain(values.iter().map(|v| match v {
        None => OsString::from(format!("--{key}")),
        Some(v) => OsString::from(format!("--{key}={v}")),
    }));
    match serve.clone().try_get_matches_from(argv) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::InvalidValue | ErrorKind::ValueValidation | ErrorKind::InvalidUtf8
            ) =>
        {
            Err(clap_line(&e))
        }
        _ => Ok(()),
    }
}

/// A clap error's first line without its `error: ` prefix.
fn clap_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serve() -> Command {
        Command::new("serve")
            .arg(Arg::new("config").long("config"))
            .arg(Arg::new("data_dir").long("data-dir").default_value("./d"))
            .arg(
                Arg::new("port")
                    .long("port")
                    .value_parser(clap::value_parser!(u16)),
            )
            .arg(
                Arg::new("allowed")
                    .long("allowed")
                    .action(ArgAction::Append),
            )
            .arg(Arg::new("stages").long("stages").value_delimiter(','))
            .arg(Arg::new("quiet").long("quiet").action(ArgAction::SetTrue))
            .arg(Arg::new("token").long("token").conflicts_with("token_file"))
            .arg(Arg::new("token_file").long("token-file"))
    }

    fn args(text: &str, set: &[&str]) -> Result<Vec<String>, ConfigFileError> {
        let mut cmd = serve();
        cmd.build();
        let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
        file_args(&cmd, text, Path::new("/etc/x.toml"), |id| {
            set.iter().any(|s| s == id)
        })
        .map(|v| v.into_iter().map(|s| s.into_string().unwrap()).collect())
    }

    #[test]
    fn every_kind_of_flag_becomes_arguments() {
        let got = args(
            "data-dir = \"/var/lib/x\"\nport = 8080\nallowed = [\"a\", \"b\"]\nstages = [5, 100]\nquiet = true\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            got,
            [
                "--allowed=a",
                "--allowed=b",
                "--data-dir=/var/lib/x",
                "--port=8080",
                "--quiet",
                "--stages=5,100"
            ]
        );
        assert!(args("quiet = false", &[]).unwrap().is_empty());
    }

    #[test]
    fn what_the_user_set_wins_and_so_does_a_conflicting_flag() {
        assert!(args("port = 1", &["port"]).unwrap().is_empty());
        assert!(args("token-file = \"/t\"", &["token"]).unwrap().is_empty());
        assert_eq!(
            args("token-file = \"/t\"", &[]).unwrap(),
            ["--token-file=/t"]
        );
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        for (text, key, says) in [
            ("prot = 1", "prot", "unknown key"),
            ("config = \"/x\"", "config", "unknown key"),
            ("port = \"eighty\"", "port", "invalid value"),
            ("port = 70000", "port", "invalid value"),
            ("quiet = 1", "quiet", "true or false"),
            ("port = [1, 2]", "port", "not a list"),
            ("[port]\nx = 1", "port", "expected a string"),
        ] {
            let err = args(text, &[]).unwrap_err().to_string();
            assert!(
                err.contains("/etc/x.toml")
                    && err.contains(&format!("'{key}'"))
                    && err.contains(says),
                "{text}: {err}"
            );
        }
        let err = args("port = ", &[]).unwrap_err().to_string();
        assert!(err.contains("/etc/x.toml") && err.contains("TOML"), "{err}");
    }

    proptest! {
        /// Any string value of a plain flag comes back out as exactly that value, once, unless the user set it.
        #[test]
        fn string_values_round_trip(v in "[^\\x00]{0,40}", user in any::<bool>()) {
            let text = format!("data-dir = {}", toml::Value::String(v.clone()));
            let got = args(&text, if user { &["data_dir"] } else { &[] }).unwrap();
            if user {
                prop_assert!(got.is_empty());
            } else {
                prop_assert_eq!(got, vec![format!("--data-dir={v}")]);
            }
        }

        /// A port in range is accepted, one out of range is refused naming the key.
        #[test]
        fn numbers_are_checked_like_on_the_command_line(n in 0i64..200_000) {
            let got = args(&format!("port = {n}"), &[]);
            if n <= i64::from(u16::MAX) {
                prop_assert_eq!(got.unwrap(), vec![format!("--port={n}")]);
            } else {
                prop_assert!(got.unwrap_err().to_string().contains("'port'"));
            }
        }
    }
}
