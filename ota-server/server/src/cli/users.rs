//! `ota-server users add|list|remove|passwd|set-role|change-password` and `ota-server users token
//! create|list|revoke`: operator accounts through the API client, like every admin command. Until the first user
//! exists the bootstrap admin token (`--token`, `OTA_ADMIN_TOKEN`) adds it; afterwards an admin's API token
//! does. Passwords are read from the terminal without echo, or as lines of standard input when it is not a
//! terminal (scripts), never from the command line.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context};
use clap::Subcommand;
use ota_protocol::accounts::{
    ApiTokenInfo, ChangePasswordRequest, CreateTokenRequest, CreateUserRequest, CreatedToken,
    LoginResponse, Role, SetPasswordRequest, SetRoleRequest, UserInfo,
};

use super::{connect, format_time, RemoteArgs};

/// `ota-server users ...`.
#[derive(Subcommand)]
#[allow(missing_docs)] // `remote` is flattened: clap takes no doc from it
pub enum UsersCommand {
    /// Add a user (the password is asked for, or read from standard input).
    Add {
        #[command(flatten)]
        remote: RemoteArgs,
        /// User name.
        name: String,
        /// viewer (reads), operator (rollouts, robots, bundles, groups, sites) or admin (also users, keys,
        /// trust, admission, settings).
        #[arg(long, value_parser = parse_role, default_value = "viewer")]
        role: Role,
    },
    /// List users and their roles.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Remove a user with their sessions and API tokens.
    Remove {
        #[command(flatten)]
        remote: RemoteArgs,
        /// User name.
        name: String,
    },
    /// Set a user's password (asked for, or read from standard input); their sessions end.
    Passwd {
        #[command(flatten)]
        remote: RemoteArgs,
        /// User name.
        name: String,
    },
    /// Change a user's role.
    SetRole {
        #[command(flatten)]
        remote: RemoteArgs,
        /// User name.
        name: String,
        /// viewer, operator or admin.
        #[arg(value_parser = parse_role)]
        role: Role,
    },
    /// Change your own password (the user whose token `--token` is): the current one, then the new one, asked
    /// for or read as two lines of standard input. Your sessions end; API tokens keep working.
    ChangePassword {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Your own API tokens, for the CLI and CI (`--token` is then one of yours).
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `ota-server users token ...`: the API tokens of the user whose token `--token` is.
#[derive(Subcommand)]
#[allow(missing_docs)]
pub enum TokenCommand {
    /// Create an API token; it is printed this once (the server keeps only its hash).
    Create {
        #[command(flatten)]
        remote: RemoteArgs,
        /// A name to tell it by ("ci", "laptop").
        name: String,
        /// Lifetime, e.g. 90d, 12h (default: until revoked).
        #[arg(long, value_parser = super::parse_duration)]
        expires_in: Option<u64>,
    },
    /// List your API tokens (never the secrets).
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Revoke one of your API tokens.
    Revoke {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The token's id (from `list`).
        id: String,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("{text:?} is not a role: viewer, operator or admin"))
}

/// One line per user.
pub fn format_user(u: &UserInfo) -> String {
    format!(
        "{}  {}  added {}",
        u.name,
        u.role,
        format_time(u.created_at)
    )
}

/// One line per API token.
pub fn format_token(t: &ApiTokenInfo) -> String {
    let used = t.last_used.map_or("never used".into(), |at| {
        format!("used {}", format_time(at))
    });
    let expires = t.expires_at.map_or("no expiry".into(), |at| {
        format!("expires {}", format_time(at))
    });
    format!(
        "{}  {}  created {}  {used}  {expires}",
        t.id,
        t.name,
        format_time(t.created_at)
    )
}

/// A password: from the terminal without echo (asked twice when `twice`), else the next line of standard input
/// (scripts give one per line). `what` names it: "Password for ana", "Current password".
fn read_password(what: &str, twice: bool) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let password = line.trim_end_matches(['\r', '\n']).to_string();
        if password.is_empty() {
            bail!(
                "no {} on standard input (one password per line)",
                what.to_lowercase()
            );
        }
        return Ok(password);
    }
    let first = prompt_hidden(&format!("{what}: "))?;
    if twice && prompt_hidden("Again: ")? != first {
        bail!("the two passwords differ; nothing changed");
    }
    Ok(first)
}

/// Reads one line from the terminal with echo off (restored afterwards, also on error).
fn prompt_hidden(prompt: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let mut err = std::io::stderr();
    write!(err, "{prompt}")?;
    err.flush()?;
    let saved = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("cannot turn the terminal's echo off")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let restored = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    writeln!(err)?;
    read.context("cannot read the password")?;
    restored.context("cannot restore the terminal's echo")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Runs one `users` subcommand.
pub fn run(cmd: UsersCommand) -> anyhow::Result<()> {
    let api = |r: &RemoteArgs| connect(&r.server, &r.token, r.ca_file.as_deref());
    let print_users = |r: &RemoteArgs, users: &[UserInfo]| -> anyhow::Result<()> {
        if r.json {
            println!("{}", serde_json::to_string_pretty(users)?);
        } else {
            users.iter().for_each(|u| println!("{}", format_user(u)));
        }
        Ok(())
    };
    match cmd {
        UsersCommand::Add { remote, name, role } => {
            let password = read_password(&format!("Password for {name}"), true)?;
            let user: UserInfo = api(&remote)?.post(
                "/api/users",
                &CreateUserRequest {
                    name,
                    role,
                    password,
                },
            )?;
            print_users(&remote, &[user])
        }
        UsersCommand::List { remote } => {
            let users: Vec<UserInfo> = api(&remote)?.get("/api/users")?;
            print_users(&remote, &users)
        }
        UsersCommand::Remove { remote, name } => {
            api(&remote)?.delete::<()>(&format!("/api/users/{name}"))?;
            println!("removed {name}");
            Ok(())
        }
        UsersCommand::Passwd { remote, name } => {
            let password = read_password(&format!("Password for {name}"), true)?;
            api(&remote)?.put::<_, ()>(
                &format!("/api/users/{name}/password"),
                &SetPasswordRequest { password },
            )?;
            println!("password of {name} set; their sessions ended");
            Ok(())
        }
        UsersCommand::ChangePassword { remote } => {
            let current = read_password("Current password", false)?;
            let password = read_password("New password", true)?;
            let session: LoginResponse = api(&remote)?.put(
                "/api/me/password",
                &ChangePasswordRequest { current, password },
            )?;
            println!(
                "password of {} changed; their sessions ended",
                session.user.name
            );
            Ok(())
        }
        UsersCommand::SetRole { remote, name, role } => {
            let user: UserInfo =
                api(&remote)?.put(&format!("/api/users/{name}/role"), &SetRoleRequest { role })?;
            print_users(&remote, &[user])
        }
        UsersCommand::Token(TokenCommand::Create {
            remote,
            name,
            expires_in,
        }) => {
            let created: CreatedToken = api(&remote)?.post(
                "/api/tokens",
                &CreateTokenRequest {
                    name,
                    expires_in_secs: expires_in,
                },
            )?;
            if remote.json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                println!("{}", created.token);
                eprintln!(
                    "{}\nthis token is shown once: store it now (the server keeps only its hash)",
                    format_token(&created.info)
                );
            }
            Ok(())
        }
        UsersCommand::Token(TokenCommand::List { remote }) => {
            let tokens: Vec<ApiTokenInfo> = api(&remote)?.get("/api/tokens")?;
            if remote.json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else if tokens.is_empty() {
                println!("no API tokens");
            } else {
                tokens.iter().for_each(|t| println!("{}", format_token(t)));
            }
            Ok(())
        }
        UsersCommand::Token(TokenCommand::Revoke { remote, id }) => {
            api(&remote)?.delete::<()>(&format!("/api/tokens/{id}"))?;
            println!("revoked {id}");
            Ok(())
        }
    }
}
