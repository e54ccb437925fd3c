//! Runs the shipped bootloader scripts: small interpreters for exactly the subset of GRUB
//! script (`grub/ota.cfg`) and U-Boot hush (`u-boot/boot.cmd`) those scripts use.
//!
//! A simulated robot "reboots" through [`run_grub`] / [`run_uboot`] (or [`reboot`]), so
//! simulations exercise the real script text that ships, not a re-implementation of it.
//! Anything outside the subset is an error, never silently ignored.
//!
//! Modelled: variables, quoting and field splitting, `if/elif/else/fi`, `&&`/`||`, `[`/
//! `test` (`=`, `!=`, `-z`, `-n`), GRUB `set/unset/export/load_env/save_env/menuentry/
//! linux/initrd` with `default`/`fallback` (menu entries see only exported variables), and
//! hush `setenv/saveenv/load/booti/bootz`. Kernel loading is mocked: a slot's kernel loads
//! unless it is listed in [`SimOptions::broken_kernels`].

mod parse;

use std::collections::{BTreeMap, BTreeSet};

use parse::{expand, Node, Word};

use ota_bootloader::{grubenv, BootEnvError, EnvState, EnvStore, Slot};

/// The shipped GRUB fragment.
pub const GRUB_SCRIPT: &str = include_str!("../../../../bootloader-hooks/grub/ota.cfg");
/// The shipped U-Boot script source.
pub const UBOOT_SCRIPT: &str = include_str!("../../../../bootloader-hooks/u-boot/boot.cmd");

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The script does not parse.
    #[error("script line {0}: {1}")]
    Parse(usize, String),
    /// The script uses something outside the simulated subset.
    #[error("script line {0}: unsupported: {1}")]
    Unsupported(usize, String),
    /// The script did something the contract forbids (e.g. a kernel loaded from one slot
    /// booted with `ota.slot=` of the other).
    #[error("inconsistent boot: {0}")]
    Inconsistent(String),
    /// Reading or writing the environment store failed.
    #[error(transparent)]
    Env(#[from] BootEnvError),
}

/// Conditions of one simulated boot.
#[derive(Debug, Clone, Default)]
pub struct SimOptions {
    /// Slots whose kernel fails to load.
    pub broken_kernels: Vec<Slot>,
    /// Make `save_env`/`saveenv` fail.
    pub save_fails: bool,
    /// Variables set before the script runs (board configuration such as `ota_A_dev`).
    pub preset: BTreeMap<String, String>,
}

/// What one simulated boot did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimBoot {
    /// The slot whose kernel was started, from `ota.slot=` on its command line;
    /// `None` if nothing could be booted.
    pub booted: Option<Slot>,
    /// The kernel command line of the booted kernel.
    pub cmdline: Option<String>,
    /// Slots whose kernels were tried, in order.
    pub attempts: Vec<Slot>,
    /// The whole environment after the script saved it, `None` if it never saved.
    pub saved_env: Option<BTreeMap<String, String>>,
}

/// Which shipped script a simulated robot boots through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    /// `grub/ota.cfg`.
    Grub,
    /// `u-boot/boot.cmd`.
    UBoot,
}

/// One full simulated boot against a store: load it, run the shipped script, write back
/// what the script saved. A never-written store is an empty environment (for GRUB: a
/// missing grubenv file).
pub fn reboot(
    store: &mut dyn EnvStore,
    loader: Loader,
    opts: &SimOptions,
) -> Result<SimBoot, SimError> {
    let state = store.load()?;
    let boot = match (loader, &state) {
        (Loader::Grub, EnvState::NeverWritten) => run_grub(None, opts)?,
        (Loader::Grub, EnvState::Vars(v)) => run_grub(Some(v), opts)?,
        (Loader::UBoot, _) => run_uboot(&state.clone().into_vars(), opts)?,
    };
    if let Some(saved) = &boot.saved_env {
        store.store(saved)?;
    }
    Ok(boot)
}

/// Runs the shipped `ota.cfg` with `env` as the grubenv file (`None`: the file is missing).
pub fn run_grub(
    env: Option<&BTreeMap<String, String>>,
    opts: &SimOptions,
) -> Result<SimBoot, SimError> {
    run_grub_script(GRUB_SCRIPT, env, opts)
}

/// Runs the shipped `boot.cmd` with `env` as the stored U-Boot environment.
pub fn run_uboot(env: &BTreeMap<String, String>, opts: &SimOptions) -> Result<SimBoot, SimError> {
    run_uboot_script(UBOOT_SCRIPT, env, opts)
}

/// Evaluates `[`/`test` arguments (without the closing `]`).
fn eval_test(args: &[String], line: usize) -> Result<bool, SimError> {
    match args {
        [] => Ok(false),
        [s] => Ok(!s.is_empty()),
        [a, op, b] if op == "=" || op == "==" => Ok(a == b),
        [a, op, b] if op == "!=" => Ok(a != b),
        [op, s] if op == "-z" => Ok(s.is_empty()),
        [op, s] if op == "-n" => Ok(!s.is_empty()),
        _ => Err(SimError::Unsupported(line, format!("test {args:?}"))),
    }
}

/// Result of one command.
enum Flow {
    Status(bool),
    /// A kernel was started: the script ends.
    Booted,
}

/// A dialect: how simple commands run and how variables are read.
trait Machine {
    fn var(&self, name: &str) -> Option<String>;
    fn simple(&mut self, argv: Vec<String>, line: usize) -> Result<Flow, SimError>;
    fn menuentry(
        &mut self,
        args: Vec<String>,
        body: Vec<Node>,
        line: usize,
    ) -> Result<(), SimError>;
}

fn expand_words(m: &dyn Machine, words: &[Word]) -> Vec<String> {
    let get = |n: &str| m.var(n);
    words.iter().flat_map(|w| expand(w, &get)).collect()
}

/// Runs a command list; returns the status of the last command, or `Booted`.
fn exec(m: &mut dyn Machine, nodes: &[Node]) -> Result<Flow, SimError> {
    let mut status = true;
    for node in nodes {
        match exec_node(m, node)? {
            Flow::Booted => return Ok(Flow::Booted),
            Flow::Status(s) => status = s,
        }
    }
    Ok(Flow::Status(status))
}

fn exec_node(m: &mut dyn Machine, node: &Node) -> Result<Flow, SimError> {
    match node {
        Node::Simple(words, line) => {
            let argv = expand_words(m, words);
            if argv.is_empty() {
                return Ok(Flow::Status(true));
            }
            m.simple(argv, *line)
        }
        Node::AndOr(a, and, b) => match exec_node(m, a)? {
            Flow::Booted => Ok(Flow::Booted),
            Flow::Status(s) if s == *and => exec_node(m, b),
            Flow::Status(s) => Ok(Flow::Status(s)),
        },
        Node::If(branches, otherwise) => {
            for (cond, body) in branches {
                match exec(m, cond)? {
                    Flow::Booted => return Ok(Flow::Booted),
                    Flow::Status(true) => return exec(m, body),
                    Flow::Status(false) => {}
                }
            }
            match otherwise {
                Some(body) => exec(m, body),
                None => Ok(Flow::Status(true)),
            }
        }
        Node::Menuentry(words, body) => {
            let args = expand_words(m, words);
            m.menuentry(args, body.clone(), 0)?;
            Ok(Flow::Status(true))
        }
    }
}

/// Splits `--opt value` / `--opt=value` options off GRUB command arguments.
fn take_file_option(
    args: &[String],
    line: usize,
) -> Result<(Option<String>, Vec<String>), SimError> {
    let mut file = None;
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--file" || a == "-f" {
            file = Some(
                args.get(i + 1)
                    .cloned()
                    .ok_or_else(|| SimError::Unsupported(line, "--file without a path".into()))?,
            );
            i += 2;
        } else if let Some(f) = a.strip_prefix("--file=") {
            file = Some(f.to_string());
            i += 1;
        } else if a == "--skip-sig" || a == "-s" {
            i += 1;
        } else if a.starts_with('-') {
            return Err(SimError::Unsupported(line, format!("option {a}")));
        } else {
            rest.push(a.clone());
            i += 1;
        }
    }
    Ok((file, rest))
}

struct Entry {
    title: String,
    id: Option<String>,
    body: Vec<Node>,
}

struct Grub {
    vars: BTreeMap<String, String>,
    exported: BTreeSet<String>,
    /// The grubenv file (`None`: missing) and the path the script first used for it.
    file: Option<BTreeMap<String, String>>,
    file_path: Option<String>,
    saved: bool,
    save_fails: bool,
    entries: Vec<Entry>,
    /// Inside a menu entry only exported variables are visible.
    in_entry: bool,
    broken: Vec<Slot>,
    kernel: Option<(Slot, String)>,
    attempts: Vec<Slot>,
}

impl Grub {
    fn same_file(&mut self, path: Option<String>, line: usize) -> Result<(), SimError> {
        let path = path.ok_or_else(|| {
            SimError::Unsupported(line, "load_env/save_env without --file".into())
        })?;
        match &self.file_path {
            None => self.file_path = Some(path),
            Some(p) if *p == path => {}
            Some(p) => {
                return Err(SimError::Inconsistent(format!(
                    "line {line}: environment file {path} differs from {p}"
                )))
            }
        }
        Ok(())
    }

    /// The slot whose `ota_X_dev` prefixes a kernel path.
    fn slot_of_path(&self, path: &str) -> Option<Slot> {
        Slot::ALL.into_iter().find(|s| {
            self.var(&format!("ota_{s}_dev"))
                .is_some_and(|dev| !dev.is_empty() && path.starts_with(&dev))
        })
    }
}

impl Machine for Grub {
    fn var(&self, name: &str) -> Option<String> {
        if self.in_entry && !self.exported.contains(name) {
            return None;
        }
        self.vars.get(name).cloned()
    }

    fn simple(&mut self, argv: Vec<String>, line: usize) -> Result<Flow, SimError> {
        let args = &argv[1..];
        let ok = |b: bool| Ok(Flow::Status(b));
        match argv[0].as_str() {
            "set" => {
                let [assign] = args else {
                    return Err(SimError::Unsupported(line, format!("set {args:?}")));
                };
                let (name, value) = assign
                    .split_once('=')
                    .ok_or_else(|| SimError::Unsupported(line, format!("set {assign}")))?;
                self.vars.insert(name.into(), value.into());
                ok(true)
            }
            "unset" => {
                for a in args {
                    self.vars.remove(a);
                }
                ok(true)
            }
            "export" => {
                self.exported.extend(args.iter().cloned());
                ok(true)
            }
            "[" => {
                let Some((last, inner)) = args.split_last().filter(|(l, _)| *l == "]") else {
                    return Err(SimError::Parse(line, "'[' without ']'".into()));
                };
                let _ = last;
                ok(eval_test(inner, line)?)
            }
            "echo" | "insmod" => ok(true),
            "load_env" => {
                let (path, names) = take_file_option(args, line)?;
                self.same_file(path, line)?;
                let Some(file) = &self.file else {
                    return ok(false);
                };
                for (k, v) in file {
                    if names.is_empty() || names.contains(k) {
                        self.vars.insert(k.clone(), v.clone());
                    }
                }
                ok(true)
            }
            "save_env" => {
                let (path, names) = take_file_option(args, line)?;
                self.same_file(path, line)?;
                if self.save_fails || names.is_empty() {
                    return ok(false);
                }
                let Some(file) = &self.file else {
                    return ok(false);
                };
                let mut new = file.clone();
                for n in &names {
                    match self.vars.get(n) {
                        Some(v) => new.insert(n.clone(), v.clone()),
                        None => new.remove(n),
                    };
                }
                // GRUB refuses to grow the block beyond 1024 bytes.
                if grubenv::encode(&new).is_err() {
                    return ok(false);
                }
                self.file = Some(new);
                self.saved = true;
                ok(true)
            }
            "linux" => {
                let Some((path, rest)) = args.split_first() else {
                    return ok(false);
                };
                let cmdline = rest.join(" ");
                let Some(slot) = self.slot_of_path(path) else {
                    return Err(SimError::Inconsistent(format!(
                        "line {line}: kernel {path} is on neither slot's device"
                    )));
                };
                self.attempts.push(slot);
                if self.broken.contains(&slot) {
                    self.kernel = None;
                    return ok(false);
                }
                self.kernel = Some((slot, cmdline));
                ok(true)
            }
            "initrd" => {
                let Some(path) = args.first() else {
                    return ok(false);
                };
                match (&self.kernel, self.slot_of_path(path)) {
                    (Some((k, _)), Some(s)) if *k != s => Err(SimError::Inconsistent(format!(
                        "line {line}: initrd {path} of slot {s} for a kernel of slot {k}"
                    ))),
                    (Some(_), Some(_)) => ok(true),
                    _ => ok(false),
                }
            }
            other => Err(SimError::Unsupported(line, format!("command {other}"))),
        }
    }

    fn menuentry(
        &mut self,
        args: Vec<String>,
        body: Vec<Node>,
        line: usize,
    ) -> Result<(), SimError> {
        let mut title = None;
        let mut id = None;
        let mut i = 0;
        while i < args.len() {
            match args[i].as_str() {
                "--id" => {
                    id = args.get(i + 1).cloned();
                    i += 2;
                }
                a if a.starts_with("--id=") => {
                    id = Some(a["--id=".len()..].to_string());
                    i += 1;
                }
                a if a.starts_with('-') => {
                    return Err(SimError::Unsupported(line, format!("menuentry option {a}")))
                }
                a => {
                    title.get_or_insert_with(|| a.to_string());
                    i += 1;
                }
            }
        }
        let title =
            title.ok_or_else(|| SimError::Parse(line, "menuentry without a title".into()))?;
        self.entries.push(Entry { title, id, body });
        Ok(())
    }
}

impl Grub {
    /// GRUB's `default`/`fallback` lookup: by id, by title, or by number.
    fn entry(&self, key: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.id.as_deref() == Some(key) || e.title == key)
            .or_else(|| {
                key.parse::<usize>()
                    .ok()
                    .filter(|&n| n < self.entries.len())
            })
    }

    /// Runs one menu entry; `Some(cmdline)` if its kernel would start.
    fn boot_entry(&mut self, index: usize) -> Result<Option<(Slot, String)>, SimError> {
        let body = self.entries[index].body.clone();
        self.kernel = None;
        self.in_entry = true;
        let result = exec(self, &body);
        self.in_entry = false;
        result?;
        Ok(self.kernel.take())
    }
}

/// Runs a GRUB script (normally [`GRUB_SCRIPT`]) with `env` as the grubenv file.
pub fn run_grub_script(
    script: &str,
    env: Option<&BTreeMap<String, String>>,
    opts: &SimOptions,
) -> Result<SimBoot, SimError> {
    let nodes = parse::parse(script)?;
    let mut vars = BTreeMap::from([("prefix".to_string(), "(hd0,gpt1)/boot/grub".to_string())]);
    vars.extend(opts.preset.clone());
    let mut g = Grub {
        vars,
        exported: BTreeSet::new(),
        file: env.cloned(),
        file_path: None,
        saved: false,
        save_fails: opts.save_fails,
        entries: Vec::new(),
        in_entry: false,
        broken: opts.broken_kernels.clone(),
        kernel: None,
        attempts: Vec::new(),
    };
    if let Flow::Booted = exec(&mut g, &nodes)? {
        return Err(SimError::Inconsistent(
            "GRUB script booted outside a menu entry".into(),
        ));
    }
    let mut order = Vec::new();
    for key in ["default", "fallback"] {
        if let Some(v) = g.vars.get(key).cloned() {
            let i = g
                .entry(&v)
                .ok_or_else(|| SimError::Inconsistent(format!("{key}={v} names no menu entry")))?;
            order.push(i);
        } else if key == "default" {
            order.push(0);
        }
    }
    let mut booted = None;
    for i in order {
        if let Some(k) = g.boot_entry(i)? {
            booted = Some(k);
            break;
        }
    }
    finish(
        booted,
        g.attempts,
        g.saved.then(|| g.file.clone().unwrap_or_default()),
    )
}

/// Checks the booted kernel's `ota.slot=` against the slot it was loaded from.
fn finish(
    booted: Option<(Slot, String)>,
    attempts: Vec<Slot>,
    saved_env: Option<BTreeMap<String, String>>,
) -> Result<SimBoot, SimError> {
    if let Some((slot, cmdline)) = &booted {
        if Slot::from_cmdline(cmdline) != Some(*slot) {
            return Err(SimError::Inconsistent(format!(
                "kernel of slot {slot} booted with command line {cmdline:?}"
            )));
        }
    }
    Ok(SimBoot {
        booted: booted.as_ref().map(|b| b.0),
        cmdline: booted.map(|b| b.1),
        attempts,
        saved_env,
    })
}

struct Hush {
    env: BTreeMap<String, String>,
    saved: Option<BTreeMap<String, String>>,
    save_fails: bool,
    broken: Vec<Slot>,
    loaded: Option<Slot>,
    attempts: Vec<Slot>,
    booted: Option<(Slot, String)>,
}

/// Load addresses a real board has in its default environment; read when the simulated
/// environment lacks them, and never saved by the simulation.
const BOARD_ADDRESSES: [(&str, &str); 4] = [
    ("kernel_addr_r", "0x40400000"),
    ("fdt_addr_r", "0x4fa00000"),
    ("ramdisk_addr_r", "0x4fe00000"),
    ("fdtcontroladdr", "0x7ef00000"),
];

impl Machine for Hush {
    fn var(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned().or_else(|| {
            BOARD_ADDRESSES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    fn simple(&mut self, argv: Vec<String>, line: usize) -> Result<Flow, SimError> {
        let args = &argv[1..];
        let ok = |b: bool| Ok(Flow::Status(b));
        match argv[0].as_str() {
            "setenv" => {
                let Some((name, value)) = args.split_first() else {
                    return ok(false);
                };
                // Like U-Boot: no value deletes, an empty argument stores an empty value.
                if value.is_empty() {
                    self.env.remove(name);
                } else {
                    self.env.insert(name.clone(), value.join(" "));
                }
                ok(true)
            }
            "saveenv" => {
                if self.save_fails {
                    return ok(false);
                }
                self.saved = Some(self.env.clone());
                ok(true)
            }
            "test" => ok(eval_test(args, line)?),
            "echo" => ok(true),
            "load" => {
                let [_iface, devpart, _addr, _path] = args else {
                    return Err(SimError::Unsupported(line, format!("load {args:?}")));
                };
                let part = devpart.split_once(':').map(|p| p.1).unwrap_or("");
                let slot = Slot::ALL
                    .into_iter()
                    .find(|s| {
                        self.env.get(&format!("ota_{s}_part")).map(String::as_str) == Some(part)
                    })
                    .ok_or_else(|| {
                        SimError::Inconsistent(format!(
                            "line {line}: load from {devpart}, which is neither slot's partition"
                        ))
                    })?;
                if self.attempts.last() != Some(&slot) {
                    self.attempts.push(slot);
                }
                if self.broken.contains(&slot) {
                    self.loaded = None;
                    return ok(false);
                }
                self.loaded = Some(slot);
                self.env.insert("filesize".into(), "1000".into());
                ok(true)
            }
            "booti" | "bootz" => {
                let Some(slot) = self.loaded else {
                    return ok(false);
                };
                let cmdline = self.env.get("bootargs").cloned().unwrap_or_default();
                self.booted = Some((slot, cmdline));
                Ok(Flow::Booted)
            }
            other => Err(SimError::Unsupported(line, format!("command {other}"))),
        }
    }

    fn menuentry(&mut self, _: Vec<String>, _: Vec<Node>, line: usize) -> Result<(), SimError> {
        Err(SimError::Unsupported(
            line,
            "menuentry in a U-Boot script".into(),
        ))
    }
}

/// Runs a U-Boot hush script (normally [`UBOOT_SCRIPT`]) with `env` as the stored
/// environment (the runtime environment starts as `env` plus [`SimOptions::preset`]).
pub fn run_uboot_script(
    script: &str,
    env: &BTreeMap<String, String>,
    opts: &SimOptions,
) -> Result<SimBoot, SimError> {
    let nodes = parse::parse(script)?;
    let mut runtime = env.clone();
    runtime.extend(opts.preset.clone());
    let mut h = Hush {
        env: runtime,
        saved: None,
        save_fails: opts.save_fails,
        broken: opts.broken_kernels.clone(),
        loaded: None,
        attempts: Vec::new(),
        booted: None,
    };
    exec(&mut h, &nodes)?;
    finish(h.booted, h.attempts, h.saved)
}
