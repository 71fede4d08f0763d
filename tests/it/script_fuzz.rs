//! Random input against every field that reaches an iPXE script: a node's `name`, its
//! MACs, `instance_info.kernel_append_params` and the image references
//! (`driver_info.deploy_kernel`/`deploy_ramdisk`, `instance_info.kernel`/`ramdisk`), sent
//! through the real API, plus random MACs for the preview and the boot listener and raw
//! bodies that are not UTF-8.
//!
//! Each case ends one of two ways. Either the API refuses it with a JSON error
//! (`{"error": {"code", "message", "field"}}`, 400 or 413, naming the field), or the
//! script the boot listener serves is read back the way iPXE reads it (lines, words,
//! labels, `#` comments, the operators `||`, `&&` and `;`, `${…}` expansions, backslash
//! continuations) and must have exactly the structure of the script of the same node
//! with benign values: the same lines, the same commands and operators at the same
//! places, and on the `kernel` and `initrd` lines exactly the submitted URL and the
//! submitted kernel arguments' words, followed by `initrd=…`, `BOOTIF=…` and
//! `|| goto retry`.
//!
//! A refusal with 409 is accepted only for a name or MACs that are valid and taken by
//! another node. One answer is tolerated and counted as a known gap: a node identifier in
//! the path that is not UTF-8 gets axum's plain-text 400 instead of a JSON error.
//!
//! The generator is seeded: `IRONBOOT_TEST_SEED=<seed>` replays a failure (the seed is
//! printed at the start and in every failure message). Field cases are all drawn before
//! they run, in three concurrent lanes that own disjoint nodes, so a replay sends the same
//! requests.

use std::collections::BTreeMap;
use std::time::Instant;

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::support::Rng;
use crate::support::server::{Db, TestServer};

/// Cases that set node fields (create or PATCH, then PUT boot and GET the script).
const FIELD_CASES: usize = 1800;
/// Random MACs for the preview and the boot listener.
const MAC_CASES: usize = 1200;
/// Raw bodies that are not valid UTF-8 or not valid JSON.
const BODY_CASES: usize = 400;
/// Long-lived nodes that the PATCH cases change.
const POOL: usize = 6;
/// Field cases run in this many concurrent lanes, each with its own pool nodes.
const LANES: usize = 3;

/// The server's `[pxe] kernel_append_params` (its default), used by the deploy target and
/// by an instance without its own arguments.
const CONFIG_ARGS: &str = "nofb vga=normal";
const CONFIG: &str = "[pxe]\nipxe_timeout = 30\n";

/// Benign values: distinct words that appear nowhere else in a script, so that the
/// fuzzed script's expected words are the benign script's with these replaced.
const BENIGN_DEPLOY_KERNEL: &str = "http://192.0.2.10/benign/deploy-kernel";
const BENIGN_DEPLOY_RAMDISK: &str = "http://192.0.2.10/benign/deploy-ramdisk?v=1&x=2";
const BENIGN_KERNEL: &str = "https://192.0.2.10/benign/kernel";
const BENIGN_RAMDISK: &str = "https://192.0.2.10/benign/ramdisk";
const BENIGN_ARGS: &str = "ironboot.benign=1";

const OPERATORS: [&str; 3] = ["||", "&&", ";"];

// ---------------------------------------------------------------------------------------
// An iPXE line reader, after ipxe/src/image/script.c (lines, backslash continuations,
// labels) and ipxe/src/core/exec.c (words, `#` comments, operators).
// ---------------------------------------------------------------------------------------

/// What iPXE splits words at. (It also splits at `\n\v\f\r`, which are control characters
/// and refused before lines are read.)
const IPXE_SPACE: [char; 2] = [' ', '\t'];

/// One command of a line and the operator that ends it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Command {
    words: Vec<String>,
    op: Option<String>,
}

/// One line as iPXE reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    label: Option<String>,
    commands: Vec<Command>,
    /// A word starting with `#` ended the line.
    comment: bool,
}

impl Line {
    /// Label, each command's first word and operator, and whether a comment ends it.
    fn shape(&self) -> String {
        let mut out = String::new();
        if let Some(l) = &self.label {
            out.push_str(&format!(":{l} "));
        }
        for c in &self.commands {
            out.push_str(c.words.first().map_or("<empty>", String::as_str));
            out.push(' ');
            if let Some(op) = &c.op {
                out.push_str(op);
                out.push(' ');
            }
        }
        if self.comment {
            out.push('#');
        }
        out
    }
}

/// Reads a script the way iPXE does, refusing what no line of ours may contain: a control
/// character other than the line feed (a NUL ends the line for Debian's iPXE; CR, VT and
/// FF split words), and a line that ends with a backslash (iPXE joins the next line).
fn read_script(script: &str) -> Result<Vec<Line>, String> {
    if let Some((i, c)) = script
        .char_indices()
        .find(|(_, c)| c.is_control() && *c != '\n')
    {
        let line = script[..i].matches('\n').count() + 1;
        return Err(format!(
            "control character U+{:04X} on line {line}",
            c as u32
        ));
    }
    let body = script
        .strip_suffix('\n')
        .ok_or("the script does not end with a line feed")?;
    body.split('\n')
        .enumerate()
        .map(|(i, text)| read_line(i + 1, text))
        .collect()
}

fn read_line(n: usize, text: &str) -> Result<Line, String> {
    if text.ends_with('\\') {
        return Err(format!(
            "line {n} ends with a backslash, which makes iPXE join the next line to it: {text:?}"
        ));
    }
    let mut rest = text.trim_start_matches(IPXE_SPACE);
    let mut label = None;
    if let Some(after) = rest.strip_prefix(':') {
        let end = after.find(IPXE_SPACE).unwrap_or(after.len());
        label = Some(after[..end].to_string());
        rest = &after[end..];
    }
    let mut commands = Vec::new();
    let mut words = Vec::new();
    let mut comment = false;
    for word in rest.split(IPXE_SPACE).filter(|w| !w.is_empty()) {
        if word.starts_with('#') {
            comment = true;
            break;
        }
        if OPERATORS.contains(&word) {
            commands.push(Command {
                words: std::mem::take(&mut words),
                op: Some(word.to_string()),
            });
        } else {
            words.push(word.to_string());
        }
    }
    if !words.is_empty() || !commands.is_empty() {
        commands.push(Command { words, op: None });
    }
    Ok(Line {
        label,
        commands,
        comment,
    })
}

/// Every `${…}` in a text (nested braces included; an unclosed one runs to the end of
/// its line), sorted.
fn expansions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let s = &rest[i..];
        let mut depth = 0;
        let mut end = s.find('\n').unwrap_or(s.len());
        for (j, c) in s[..end].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push(s[..end].to_string());
        rest = &s[end..];
    }
    out.sort();
    out
}

/// The expansions the built-in node template writes itself.
fn template_expansions() -> Vec<String> {
    let mut known = expansions(ironboot::ipxe::DEFAULT_NODE_TEMPLATE);
    known.dedup();
    assert!(
        !known.is_empty(),
        "the node template has no ${{…}}: update this test"
    );
    known
}

/// Words as iPXE splits them.
fn ipxe_words(text: &str) -> Vec<String> {
    text.split(IPXE_SPACE)
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Comparing a fuzzed script with the benign script of the same node.
// ---------------------------------------------------------------------------------------

/// A script rendered with benign values.
#[derive(Debug, Clone)]
struct Benign {
    target: &'static str,
    script: String,
    lines: Vec<Line>,
    hexhyp: String,
}

/// What the fuzzed script must carry where the benign one has the benign values.
#[derive(Debug, Clone)]
struct Expect {
    kernel_url: String,
    ramdisk_url: String,
    args: Vec<String>,
    hexhyp: String,
}

impl Benign {
    fn urls(&self) -> (&'static str, &'static str) {
        if self.target == "instance" {
            (BENIGN_KERNEL, BENIGN_RAMDISK)
        } else {
            (BENIGN_DEPLOY_KERNEL, BENIGN_DEPLOY_RAMDISK)
        }
    }

    /// The benign lines with the benign values replaced by the expected ones.
    fn expected(&self, e: &Expect) -> Vec<Line> {
        let (kernel, ramdisk) = self.urls();
        let bootif = format!("BOOTIF=01-{}", self.hexhyp);
        let mut lines = self.lines.clone();
        for line in &mut lines {
            for c in &mut line.commands {
                let mut words = Vec::with_capacity(c.words.len());
                for w in c.words.drain(..) {
                    match w.as_str() {
                        w if w == kernel => words.push(e.kernel_url.clone()),
                        w if w == ramdisk => words.push(e.ramdisk_url.clone()),
                        w if w == bootif => words.push(format!("BOOTIF=01-{}", e.hexhyp)),
                        BENIGN_ARGS => words.extend(e.args.iter().cloned()),
                        _ => words.push(w),
                    }
                }
                c.words = words;
            }
        }
        lines
    }

    /// Checks a script against this benign one; says what differs.
    fn check(&self, script: &str, e: &Expect) -> Result<(), String> {
        let got = read_script(script)?;
        // ${…}: only the template's own, as many as in the benign script.
        let known = template_expansions();
        let (mine, theirs) = (expansions(script), expansions(&self.script));
        if let Some(x) = mine.iter().find(|x| !known.contains(x)) {
            return Err(format!(
                "{x:?} is not one of the template's expansions {known:?}"
            ));
        }
        if mine != theirs {
            return Err(format!(
                "expansions {mine:?}, the benign script has {theirs:?}"
            ));
        }
        // Line structure.
        if got.len() != self.lines.len() {
            return Err(format!(
                "{} lines, the benign script has {}",
                got.len(),
                self.lines.len()
            ));
        }
        for (i, (g, b)) in got.iter().zip(&self.lines).enumerate() {
            if g.comment != b.comment {
                return Err(format!(
                    "line {}: a word starting with # {} (benign: {:?})",
                    i + 1,
                    if g.comment {
                        "cuts the line short"
                    } else {
                        "is missing"
                    },
                    b.shape()
                ));
            }
            if g.shape() != b.shape() {
                return Err(format!(
                    "line {}: commands and operators {:?}, the benign script has {:?}",
                    i + 1,
                    g.shape(),
                    b.shape()
                ));
            }
        }
        // The kernel line keeps initrd=, BOOTIF= and its fallback.
        let kernel = got
            .iter()
            .find(|l| {
                l.commands
                    .first()
                    .is_some_and(|c| c.words.first().is_some_and(|w| w == "kernel"))
            })
            .ok_or("no kernel line")?;
        let words = &kernel.commands[0].words;
        let tail = &words[words.len().saturating_sub(2)..];
        if !(tail.len() == 2 && tail[0].starts_with("initrd=") && tail[1].starts_with("BOOTIF=01-"))
            || kernel.commands[0].op.as_deref() != Some("||")
            || kernel.commands.get(1).map(|c| c.words.join(" ")).as_deref() != Some("goto retry")
        {
            return Err(format!(
                "the kernel line lost initrd=, BOOTIF= or `|| goto retry`: {kernel:?}"
            ));
        }
        // Every word.
        let want = self.expected(e);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if g != w {
                return Err(format!(
                    "line {}: read as {:?}\n  expected {:?}",
                    i + 1,
                    g.commands,
                    w.commands
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Random input.
// ---------------------------------------------------------------------------------------

/// C0, DEL and C1 controls, NEL, the line and paragraph separators, and Unicode spaces.
fn dangerous_code_points() -> Vec<u32> {
    let mut v: Vec<u32> = (0..0x20).chain(0x7f..0xa0).collect();
    v.extend([
        0x85, 0xa0, 0x1680, 0x180e, 0x200b, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff,
    ]);
    v.extend(0x2000..=0x200a);
    v
}

/// What iPXE's parser or a URL treats specially, and whitespace of every kind.
const SYNTAX: &[&str] = &[
    "#",
    "#",
    "$",
    "{",
    "}",
    "${",
    "${",
    "$${",
    "}{",
    "${attempt}",
    "${net0/mac}",
    "||",
    "||",
    "&&",
    ";",
    "|",
    "&",
    ":",
    ":retry",
    "\\",
    "\\",
    "\"",
    "'",
    "`",
    "%",
    "%00",
    "%0a",
    "%24",
    "%7B",
    " ",
    " ",
    "\t",
    "\n",
    "\r",
    "\r\n",
    "\u{b}",
    "\u{c}",
    " || ",
    " && ",
    " ; ",
    " #",
    "\\\n",
    "\n:retry\n",
    "=",
    "/",
    "?",
    "@",
    "[",
    "]",
    "*",
    "!",
    "<",
    ">",
    "(",
    ")",
    ",",
    "~",
    "^",
    "-",
    "--",
    "..",
    ".",
    "\u{0}",
    "\u{1}",
    "\u{7}",
    "\u{1b}[31m",
    "\u{7f}",
    "\u{85}",
    "\u{2028}",
    "\u{2029}",
    "\u{a0}",
];

/// Pieces that are fine on their own, so that some inputs are accepted.
const VALID: &[&str] = &[
    "a",
    "Z",
    "0",
    "9",
    "k",
    "-",
    ".",
    "_",
    "~",
    "vmlinuz",
    "initrd.img",
    "console=ttyS0",
    "x=1",
    "a&b",
    "a||b",
    "x#y",
    "a;b",
    "$x",
    "{x}",
    "ip=dhcp",
    "root=/dev/ram0",
    "%20",
    "naïve",
    "ü",
    "日本",
];

const NAME_CHARS: &[u8] = b"ABCXYZabcxyz0123456789-._~";

struct Gen {
    rng: Rng,
    dangerous: Vec<u32>,
}

impl Gen {
    fn new(rng: Rng) -> Gen {
        Gen {
            rng,
            dangerous: dangerous_code_points(),
        }
    }

    fn below(&mut self, n: usize) -> usize {
        self.rng.below(n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.rng.chance(percent)
    }

    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        self.rng.pick::<&str>(items)
    }

    fn dangerous(&mut self) -> String {
        if self.chance(40) {
            let c = *self.rng.pick(&self.dangerous);
            char::from_u32(c).unwrap().to_string()
        } else {
            self.pick(SYNTAX).to_string()
        }
    }

    /// Any code point, mostly low ones.
    fn code_point(&mut self) -> char {
        loop {
            let limit = *self.rng.pick(&[0x100u64, 0x800, 0x3100, 0x11_0000]);
            if let Some(c) = char::from_u32(self.rng.below(limit) as u32) {
                return c;
            }
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.rng.next() as u8).collect()
    }

    /// Random bytes, lossy to UTF-8 (invalid sequences become U+FFFD).
    fn lossy(&mut self, max: usize) -> String {
        let n = 1 + self.below(max);
        let b = self.bytes(n);
        String::from_utf8_lossy(&b).into_owned()
    }

    fn piece(&mut self) -> String {
        match self.below(100) {
            0..40 => self.dangerous(),
            40..75 => self.pick(VALID).to_string(),
            75..88 => self.code_point().to_string(),
            _ => self.lossy(6),
        }
    }

    fn text(&mut self, max_pieces: usize) -> String {
        let n = self.below(max_pieces + 1);
        (0..n).map(|_| self.piece()).collect()
    }

    /// Inserts `piece` at a random character boundary.
    fn insert(&mut self, text: &mut String, piece: &str) {
        let bounds: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        let at = bounds[self.below(bounds.len())];
        text.insert_str(at, piece);
    }

    /// A string of about `len` bytes of `unit`, sometimes with a dangerous piece in it.
    fn long(&mut self, unit: &str, len: usize) -> String {
        let mut s = unit.repeat(len / unit.len().max(1) + 1);
        let mut end = len.min(s.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        if self.chance(30) {
            let d = self.dangerous();
            self.insert(&mut s, &d);
        }
        s
    }

    fn name(&mut self) -> String {
        match self.below(100) {
            0..35 => {
                let n = 1 + self.below(24);
                (0..n).map(|_| *self.rng.pick(NAME_CHARS) as char).collect()
            }
            35..40 => {
                let n = 250 + self.below(10);
                let mut s = self.long("node-", n);
                if self.chance(50) {
                    s = s.replace(|c: char| !c.is_ascii_alphanumeric(), "n");
                }
                s
            }
            40..45 => {
                let u = uuid::Uuid::new_v4().to_string();
                if self.chance(50) { u.to_uppercase() } else { u }
            }
            45..55 => self.lossy(40),
            _ => {
                let mut s: String = (0..1 + self.below(8))
                    .map(|_| *self.rng.pick(NAME_CHARS) as char)
                    .collect();
                for _ in 0..1 + self.below(3) {
                    let p = self.piece();
                    self.insert(&mut s, &p);
                }
                s
            }
        }
    }

    fn args(&mut self) -> String {
        let seps = [" ", " ", " ", "\t", "  ", " \t "];
        match self.below(100) {
            0..25 => {
                let n = self.below(6);
                let mut s = String::new();
                for i in 0..n {
                    if i > 0 || self.chance(20) {
                        s.push_str(self.pick(&seps));
                    }
                    s.push_str(self.pick(VALID));
                }
                if self.chance(20) {
                    s.push_str(self.pick(&seps));
                }
                s
            }
            25..32 => {
                let len = *self
                    .rng
                    .pick(&[2000usize, 2040, 2047, 2048, 2049, 2100, 5000]);
                let unit = self.pick(&["a", "ab=c ", "x\t", "ü "]);
                self.long(unit, len)
            }
            32..40 => self.lossy(80),
            _ => {
                let n = 1 + self.below(6);
                let mut s = String::new();
                for i in 0..n {
                    if i > 0 {
                        let sep = if self.chance(70) {
                            self.rng.pick(&seps).to_string()
                        } else {
                            self.dangerous()
                        };
                        s.push_str(&sep);
                    }
                    let w = if self.chance(50) {
                        self.pick(VALID).to_string()
                    } else {
                        self.text(3)
                    };
                    s.push_str(&w);
                }
                s
            }
        }
    }

    fn url(&mut self) -> String {
        if self.chance(5) {
            return self.text(8);
        }
        if self.chance(3) {
            return self.lossy(60);
        }
        let scheme = if self.chance(85) {
            self.pick(&["http://", "https://"]).to_string()
        } else {
            self.pick(&[
                "HTTP://",
                "http:/",
                "http:",
                "ftp://",
                "swift://",
                "file://",
                "glance://",
                "",
                " http://",
                "http:// ",
                "https:\\\\",
            ])
            .to_string()
        };
        let mut host = if self.chance(70) {
            self.pick(&[
                "images.example.com",
                "10.0.2.2",
                "[2001:db8::1]",
                "h",
                "user:pw@h",
            ])
            .to_string()
        } else {
            self.text(3)
        };
        if self.chance(20) {
            host.push_str(self.pick(&[":8080", ":", ":0", ":99999"]));
        }
        let mut path = String::new();
        for _ in 0..self.below(5) {
            path.push('/');
            let seg = if self.chance(50) {
                self.pick(VALID).to_string()
            } else {
                self.text(3)
            };
            path.push_str(&seg);
        }
        if self.chance(4) {
            let len = *self.rng.pick(&[3000usize, 66_000, 1_100_000]);
            path.push('/');
            path.push_str(&self.long("p", len));
        }
        if self.chance(40) {
            path.push('?');
            let q = self.text(4);
            path.push_str(&q);
        }
        if self.chance(10) {
            let d = self.dangerous();
            let mut s = format!("{scheme}{host}{path}");
            self.insert(&mut s, &d);
            return s;
        }
        format!("{scheme}{host}{path}")
    }

    /// Six random octets of a unicast, non-zero MAC.
    fn mac_bytes(&mut self) -> [u8; 6] {
        let mut b = [0u8; 6];
        b.copy_from_slice(&self.bytes(6));
        b[0] = (b[0] & 0xfe) | 0x02;
        b
    }

    /// `base` in one of the usual spellings, mutated half of the time. Returns the text
    /// and whether it is an unmutated spelling.
    fn mac(&mut self, base: [u8; 6]) -> (String, bool) {
        let hex: Vec<String> = base.iter().map(|b| format!("{b:02x}")).collect();
        let mut s = match self.below(4) {
            0 => hex.join(":"),
            1 => hex.join("-"),
            2 => format!(
                "{}{}.{}{}.{}{}",
                hex[0], hex[1], hex[2], hex[3], hex[4], hex[5]
            ),
            _ => hex.concat(),
        };
        match self.below(3) {
            0 => s = s.to_uppercase(),
            1 => {
                s = s
                    .chars()
                    .map(|c| {
                        if self.chance(50) {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        }
                    })
                    .collect()
            }
            _ => {}
        }
        if self.chance(50) {
            return (s, true);
        }
        match self.below(8) {
            0 => {
                let d = self.dangerous();
                self.insert(&mut s, &d);
            }
            1 => {
                let (a, b) = (self.dangerous(), self.dangerous());
                s = format!("{a}{s}{b}");
            }
            2 => {
                let i = self.below(s.len());
                let p = self.piece();
                s.replace_range(i..i + 1, &p);
            }
            3 => {
                let keep = self.below(s.len());
                s.truncate(keep);
            }
            4 => s = format!("01-{s}"),
            5 => s = s.replacen(&hex[0], "01", 1),
            6 => s = self.text(6),
            _ => {
                let p = self.piece();
                s.push_str(&p);
            }
        }
        (s, false)
    }
}

// ---------------------------------------------------------------------------------------
// Cases.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    Name,
    Macs,
    BootMode,
    DeployKernel,
    DeployRamdisk,
    Kernel,
    Ramdisk,
    Args,
}

impl Field {
    fn path(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Macs => "macs",
            Field::BootMode => "boot_mode",
            Field::DeployKernel => "driver_info.deploy_kernel",
            Field::DeployRamdisk => "driver_info.deploy_ramdisk",
            Field::Kernel => "instance_info.kernel",
            Field::Ramdisk => "instance_info.ramdisk",
            Field::Args => "instance_info.kernel_append_params",
        }
    }

    /// Whether an error's `field` names this field (`document_too_large` names the
    /// whole document).
    fn named_by(self, field: &str, code: &str) -> bool {
        let document = self.path().split_once('.').map(|(d, _)| d);
        match self {
            Field::Macs => field == "macs" || field.starts_with("macs["),
            _ => field == self.path() || (code == "document_too_large" && document == Some(field)),
        }
    }
}

/// A node's writable fields as a case sends them.
#[derive(Debug, Clone)]
struct Values {
    name: Option<String>,
    macs: Vec<String>,
    boot_mode: String,
    deploy_kernel: Option<String>,
    deploy_ramdisk: Option<String>,
    kernel: Option<String>,
    ramdisk: Option<String>,
    args: Option<String>,
}

impl Values {
    fn benign(name: &str, mac: &str, boot_mode: &str) -> Values {
        Values {
            name: Some(name.into()),
            macs: vec![mac.into()],
            boot_mode: boot_mode.into(),
            deploy_kernel: Some(BENIGN_DEPLOY_KERNEL.into()),
            deploy_ramdisk: Some(BENIGN_DEPLOY_RAMDISK.into()),
            kernel: Some(BENIGN_KERNEL.into()),
            ramdisk: Some(BENIGN_RAMDISK.into()),
            args: Some(BENIGN_ARGS.into()),
        }
    }

    /// The whole node as a JSON object; absent values are `null` (a merge patch removes
    /// them) or left out (for a create).
    fn doc(&self, nulls: bool) -> Value {
        fn put(m: &mut Map<String, Value>, k: &str, v: &Option<String>, nulls: bool) {
            match v {
                Some(v) => {
                    m.insert(k.into(), json!(v));
                }
                None if nulls => {
                    m.insert(k.into(), Value::Null);
                }
                None => {}
            }
        }
        let mut doc = Map::new();
        put(&mut doc, "name", &self.name, nulls);
        doc.insert("macs".into(), json!(self.macs));
        doc.insert("boot_mode".into(), json!(self.boot_mode));
        let mut di = Map::new();
        put(&mut di, "deploy_kernel", &self.deploy_kernel, nulls);
        put(&mut di, "deploy_ramdisk", &self.deploy_ramdisk, nulls);
        let mut ii = Map::new();
        put(&mut ii, "kernel", &self.kernel, nulls);
        put(&mut ii, "ramdisk", &self.ramdisk, nulls);
        put(&mut ii, "kernel_append_params", &self.args, nulls);
        doc.insert("driver_info".into(), Value::Object(di));
        doc.insert("instance_info".into(), Value::Object(ii));
        Value::Object(doc)
    }

    /// What the script for `target` must carry.
    fn expect(&self, target: &str, hexhyp: &str) -> Expect {
        let (k, r) = if target == "instance" {
            (&self.kernel, &self.ramdisk)
        } else {
            (&self.deploy_kernel, &self.deploy_ramdisk)
        };
        let args = match (target, &self.args) {
            ("instance", Some(a)) => ipxe_words(a),
            _ => ipxe_words(CONFIG_ARGS),
        };
        Expect {
            kernel_url: k.clone().unwrap(),
            ramdisk_url: r.clone().unwrap(),
            args,
            hexhyp: hexhyp.into(),
        }
    }
}

/// A node the PATCH cases reuse.
struct PoolNode {
    uuid: String,
    name: String,
    mac: String,
}

/// Debug-escaped and shortened, for messages.
fn show(v: &impl std::fmt::Debug) -> String {
    let s = format!("{v:?}");
    if s.len() > 600 {
        let mut end = 600;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…({} bytes)", &s[..end], s.len())
    } else {
        s
    }
}

/// A script line by line, each line escaped and shortened, for messages.
fn show_script(script: &str) -> String {
    script
        .split('\n')
        .enumerate()
        .map(|(i, l)| format!("{:3} {}", i + 1, show(&l)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Percent-encodes every byte but the unreserved ones.
fn pct(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The lowercase hex digits of a MAC the server accepted, in order: what its script must
/// carry after `BOOTIF=01-`.
fn hex_digits(text: &str) -> String {
    text.chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn hexhyp_of(digits: &str) -> String {
    digits
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("-")
}

/// Checks the shape of an API error: `{"error": {"code", "message", "field"?}}`, a known
/// code, and a status that the code maps to.
fn error_shape(status: StatusCode, body: &Value) -> Result<(String, Option<String>), String> {
    let obj = body
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| format!("{status}: not a JSON error object: {}", show(body)))?;
    let err = obj
        .get("error")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{status}: no \"error\" object: {}", show(body)))?;
    if let Some(k) = err
        .keys()
        .find(|k| !["code", "message", "field"].contains(&k.as_str()))
    {
        return Err(format!("{status}: unexpected key {k:?} in {}", show(body)));
    }
    let code = err
        .get("code")
        .and_then(Value::as_str)
        .filter(|c| {
            ironboot::code::ErrorCode::ALL
                .iter()
                .any(|k| k.as_str() == *c)
        })
        .ok_or_else(|| format!("{status}: no known code: {}", show(body)))?;
    if err
        .get("message")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(format!("{status}: no message: {}", show(body)));
    }
    let field = match err.get("field") {
        None => None,
        Some(Value::String(f)) if !f.is_empty() => Some(f.clone()),
        Some(other) => return Err(format!("{status}: field is {other}")),
    };
    let mapped = ironboot::server::error::status_of(
        *ironboot::code::ErrorCode::ALL
            .iter()
            .find(|k| k.as_str() == code)
            .unwrap(),
    );
    if mapped != status {
        return Err(format!("{status} for code {code}, which maps to {mapped}"));
    }
    Ok((code.to_string(), field))
}

#[derive(Default)]
struct Stats {
    /// Per field: cases whose fuzzed value reached a checked script.
    scripted: BTreeMap<Field, usize>,
    /// Per field: cases refused by the API.
    refused: BTreeMap<Field, usize>,
    codes: BTreeMap<String, usize>,
    conflicts: usize,
    previews: BTreeMap<u16, usize>,
    boot_paths: BTreeMap<u16, usize>,
}

impl Stats {
    fn add(&mut self, other: Stats) {
        fn merge<K: Ord>(a: &mut BTreeMap<K, usize>, b: BTreeMap<K, usize>) {
            for (k, v) in b {
                *a.entry(k).or_default() += v;
            }
        }
        merge(&mut self.scripted, other.scripted);
        merge(&mut self.refused, other.refused);
        merge(&mut self.codes, other.codes);
        merge(&mut self.previews, other.previews);
        merge(&mut self.boot_paths, other.boot_paths);
        self.conflicts += other.conflicts;
    }
}

/// One field case, drawn before any request is sent so that cases can run concurrently
/// and still replay from the seed.
#[derive(Debug)]
struct Case {
    n: usize,
    target: &'static str,
    mode: &'static str,
    /// POST a new node; otherwise PATCH pool node `pool`.
    create: bool,
    pool: usize,
    fields: Vec<Field>,
    /// The benign name and MAC of the node.
    name: String,
    mac: String,
    values: Values,
    /// Also compare the API preview with the boot listener's script.
    preview: bool,
}

impl Case {
    fn describe(&self) -> String {
        let v = &self.values;
        format!(
            "case {} ({}, target {}, {}), fuzzed {:?}: {}",
            self.n,
            if self.create { "create" } else { "patch" },
            self.target,
            self.mode,
            self.fields.iter().map(|f| f.path()).collect::<Vec<_>>(),
            self.fields
                .iter()
                .map(|f| match f {
                    Field::Name => show(&v.name),
                    Field::Macs => show(&v.macs),
                    Field::BootMode => show(&v.boot_mode),
                    Field::DeployKernel => show(&v.deploy_kernel),
                    Field::DeployRamdisk => show(&v.deploy_ramdisk),
                    Field::Kernel => show(&v.kernel),
                    Field::Ramdisk => show(&v.ramdisk),
                    Field::Args => show(&v.args),
                })
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

impl Gen {
    /// Which fields a case fuzzes: mostly one that reaches the target's script.
    fn fields(&mut self, target: &str) -> Vec<Field> {
        let reaching: &[Field] = if target == "instance" {
            &[
                Field::Name,
                Field::Macs,
                Field::Kernel,
                Field::Ramdisk,
                Field::Args,
                Field::Args,
            ]
        } else {
            &[
                Field::Name,
                Field::Macs,
                Field::DeployKernel,
                Field::DeployRamdisk,
            ]
        };
        let all = [
            Field::Name,
            Field::Macs,
            Field::BootMode,
            Field::DeployKernel,
            Field::DeployRamdisk,
            Field::Kernel,
            Field::Ramdisk,
            Field::Args,
        ];
        let n = if self.chance(75) {
            1
        } else {
            2 + self.below(2)
        };
        let mut out = Vec::new();
        while out.len() < n {
            let f = if self.chance(90) {
                *self.rng.pick(reaching)
            } else {
                *self.rng.pick(&all)
            };
            if !out.contains(&f) {
                out.push(f);
            }
        }
        out.sort();
        out
    }

    fn fuzz(&mut self, v: &mut Values, f: Field) {
        let absent = self.chance(4);
        match f {
            Field::Name => v.name = (!absent).then(|| self.name()),
            Field::Macs => {
                v.macs = match self.below(10) {
                    0 => vec![],
                    1 => {
                        let b = self.mac_bytes();
                        vec![self.mac(b).0, self.mac(b).0]
                    }
                    2 => {
                        let (a, b) = (self.mac_bytes(), self.mac_bytes());
                        vec![self.mac(a).0, self.mac(b).0]
                    }
                    _ => {
                        let b = self.mac_bytes();
                        vec![self.mac(b).0]
                    }
                }
            }
            Field::BootMode => {
                v.boot_mode = if self.chance(30) {
                    self.pick(&["bios", "uefi", "BIOS", "uefi ", "legacy"])
                        .to_string()
                } else {
                    self.text(3)
                }
            }
            Field::DeployKernel => v.deploy_kernel = (!absent).then(|| self.url()),
            Field::DeployRamdisk => v.deploy_ramdisk = (!absent).then(|| self.url()),
            Field::Kernel => v.kernel = (!absent).then(|| self.url()),
            Field::Ramdisk => v.ramdisk = (!absent).then(|| self.url()),
            Field::Args => v.args = (!absent).then(|| self.args()),
        }
    }

    fn case(&mut self, n: usize, pool: &[PoolNode], seed: u64) -> Case {
        let target = if self.chance(50) {
            "deploy"
        } else {
            "instance"
        };
        let mode = if self.chance(50) { "bios" } else { "uefi" };
        let create = self.chance(20);
        let fields = self.fields(target);
        let index = self.below(pool.len());
        let (name, mac) = if create {
            let mac = self.mac_bytes().map(|b| format!("{b:02x}")).join(":");
            (format!("benign-create-{n}-{}", seed % 100_000), mac)
        } else {
            (pool[index].name.clone(), pool[index].mac.clone())
        };
        let mut values = Values::benign(&name, &mac, mode);
        for f in &fields {
            self.fuzz(&mut values, *f);
        }
        Case {
            n,
            target,
            mode,
            create,
            pool: index,
            fields,
            name,
            mac,
            values,
            preview: self.chance(20),
        }
    }
}

/// Runs cases against the shared server. Concurrent lanes own disjoint pool nodes.
struct Lane<'a> {
    s: &'a TestServer,
    seed: u64,
    pool: &'a [PoolNode],
    benign: BTreeMap<(usize, &'static str, &'static str), Benign>,
    stats: Stats,
}

impl<'a> Lane<'a> {
    fn new(s: &'a TestServer, seed: u64, pool: &'a [PoolNode]) -> Lane<'a> {
        Lane {
            s,
            seed,
            pool,
            benign: BTreeMap::new(),
            stats: Stats::default(),
        }
    }

    #[track_caller]
    fn fail(&self, case: &str, msg: &str) -> ! {
        panic!(
            "{case}: {msg}\n(replay with IRONBOOT_TEST_SEED={})",
            self.seed
        )
    }

    /// Sets a node to benign values, prepares `target` and returns its script.
    async fn render_benign(
        &self,
        uuid: &str,
        name: &str,
        mac: &str,
        target: &'static str,
        mode: &str,
    ) -> Benign {
        let case = format!("benign render of {uuid} ({target}, {mode})");
        let values = Values::benign(name, mac, mode);
        let (st, body) = self.s.patch(uuid, values.doc(true)).await;
        if st != StatusCode::OK {
            self.fail(&case, &format!("PATCH: {st} {body}"));
        }
        let (st, body) = self.s.set_target(uuid, target).await;
        if st != StatusCode::ACCEPTED {
            self.fail(&case, &format!("PUT boot: {st} {body}"));
        }
        let hexhyp = mac.replace(':', "-");
        let (st, script) = self.s.boot_get(&format!("/pxelinux.cfg/{hexhyp}")).await;
        if st != StatusCode::OK {
            self.fail(&case, &format!("GET script: {st} {script}"));
        }
        let lines = read_script(&script)
            .unwrap_or_else(|e| self.fail(&case, &format!("{e}\n{}", show_script(&script))));
        let b = Benign {
            target,
            script,
            lines,
            hexhyp,
        };
        // The benign script checks against itself: the reader and the substitution agree.
        let mut me = values.expect(target, &b.hexhyp);
        if target == "instance" {
            me.args = vec![BENIGN_ARGS.into()];
        }
        if let Err(e) = b.check(&b.script, &me) {
            self.fail(&case, &format!("{e}\n{}", show_script(&b.script)));
        }
        b
    }

    async fn pool_benign(&mut self, i: usize, target: &'static str, mode: &'static str) -> Benign {
        if let Some(b) = self.benign.get(&(i, target, mode)) {
            return b.clone();
        }
        let p = &self.pool[i];
        let b = self
            .render_benign(&p.uuid, &p.name, &p.mac, target, mode)
            .await;
        self.benign.insert((i, target, mode), b.clone());
        b
    }

    /// A refusal: the JSON error shape, 400 or 413, the field named. A conflict (409) is
    /// allowed only for a valid name or MAC, which another node has.
    fn refused(&mut self, c: &Case, stage: &str, status: StatusCode, body: &Value) {
        let case = c.describe();
        let (code, field) = error_shape(status, body)
            .unwrap_or_else(|e| self.fail(&case, &format!("{stage}: {e}")));
        *self.stats.codes.entry(code.clone()).or_default() += 1;
        if status == StatusCode::CONFLICT {
            let valid = match (code.as_str(), field.as_deref()) {
                ("duplicate_name", Some("name")) => c
                    .values
                    .name
                    .as_deref()
                    .is_some_and(|n| ironboot::node::validate_name(n).is_ok()),
                ("duplicate_mac", Some("macs")) => c
                    .values
                    .macs
                    .iter()
                    .all(|m| ironboot::node::Mac::parse(m).is_ok()),
                _ => false,
            };
            if !valid {
                self.fail(&case, &format!("{stage}: {status} {body}"));
            }
            self.stats.conflicts += 1;
            return;
        }
        if status != StatusCode::BAD_REQUEST && status != StatusCode::PAYLOAD_TOO_LARGE {
            self.fail(&case, &format!("{stage}: status {status}: {body}"));
        }
        if code == "body_too_large" {
            for f in &c.fields {
                *self.stats.refused.entry(*f).or_default() += 1;
            }
            return;
        }
        let Some(field) = field else {
            self.fail(&case, &format!("{stage}: {code} names no field: {body}"));
        };
        let named: Vec<Field> = c
            .fields
            .iter()
            .copied()
            .filter(|f| f.named_by(&field, &code))
            .collect();
        if named.is_empty() {
            self.fail(
                &case,
                &format!("{stage}: the error names {field:?}, not a fuzzed field: {body}"),
            );
        }
        for f in named {
            *self.stats.refused.entry(f).or_default() += 1;
        }
    }

    async fn delete(&self, uuid: &str) {
        let (st, body) = self
            .s
            .call(Method::DELETE, &format!("/v1/nodes/{uuid}"), None)
            .await;
        assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    }

    async fn run(&mut self, cases: Vec<Case>) {
        for c in cases {
            self.field_case(c).await;
        }
    }

    /// Create or PATCH, PUT boot, GET the script, compare it with the benign one.
    async fn field_case(&mut self, c: Case) {
        let case = c.describe();
        let benign = if c.create {
            None
        } else {
            Some(self.pool_benign(c.pool, c.target, c.mode).await)
        };
        let (st, node) = if c.create {
            self.s
                .call(Method::POST, "/v1/nodes", Some(c.values.doc(false)))
                .await
        } else {
            self.s
                .patch(&self.pool[c.pool].uuid, c.values.doc(true))
                .await
        };
        if !st.is_success() {
            return self.refused(&c, "create/PATCH", st, &node);
        }
        let uuid = node["uuid"].as_str().unwrap().to_string();
        let stored: Vec<String> = node["macs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_string())
            .collect();
        // The stored MACs (in the store's order) are the sent ones, normalized.
        let mut sent: Vec<String> = c.values.macs.iter().map(|m| hex_digits(m)).collect();
        let mut got: Vec<String> = stored.iter().map(|m| m.replace(':', "")).collect();
        sent.sort();
        got.sort();
        if sent != got {
            self.fail(&case, &format!("the MACs were stored as {stored:?}"));
        }

        let (st, body) = self.s.set_target(&uuid, c.target).await;
        if !st.is_success() {
            self.refused(&c, "PUT boot", st, &body);
            if c.create {
                self.delete(&uuid).await;
            }
            return;
        }
        if body["state"] == "preparing" {
            // a file:// reference goes to the image cache in the background; the fuzzed
            // file does not exist, so the node ends failed and its script is not this one
            let path = format!("/v1/nodes/{uuid}");
            crate::support::wait_for("the background preparation to end", || async {
                self.s.call(Method::GET, &path, None).await.1["state"] != "preparing"
            })
            .await;
            let (_, n) = self.s.call(Method::GET, &path, None).await;
            if n["state"] != "failed" {
                self.fail(
                    &case,
                    &format!("a fuzzed file:// reference was fetched: {n}"),
                );
            }
            if c.create {
                self.delete(&uuid).await;
            }
            return;
        }

        let Some(mac) = stored.first() else {
            let r = self
                .s
                .call(Method::GET, &format!("/v1/nodes/{uuid}/ipxe"), None)
                .await;
            match error_shape(r.0, &r.1) {
                Ok((code, _)) if code == "no_macs" => {}
                other => self.fail(&case, &format!("preview without MACs: {other:?} {}", r.1)),
            }
            if c.create {
                self.delete(&uuid).await;
            }
            return;
        };
        let hexhyp = mac.replace(':', "-");
        let (st, script) = self.s.boot_get(&format!("/pxelinux.cfg/{hexhyp}")).await;
        if st != StatusCode::OK {
            self.fail(&case, &format!("GET script: {st} {script}"));
        }
        if c.preview {
            let preview = self
                .s
                .request(Method::GET, &format!("/v1/nodes/{uuid}/ipxe"), None, None)
                .await
                .text()
                .await
                .unwrap();
            if preview != script {
                self.fail(
                    &case,
                    &format!(
                        "the preview differs from the boot script:\n{}\n---\n{}",
                        show_script(&preview),
                        show_script(&script)
                    ),
                );
            }
        }
        let benign = match benign {
            Some(b) => b,
            None => {
                let b = self
                    .render_benign(&uuid, &c.name, &c.mac, c.target, c.mode)
                    .await;
                self.delete(&uuid).await;
                b
            }
        };
        let expect = c.values.expect(c.target, &hexhyp);
        if let Err(e) = benign.check(&script, &expect) {
            self.fail(
                &case,
                &format!(
                    "the script does not read as the template intends: {e}\n--- script:\n{}\n--- benign:\n{}",
                    show_script(&script),
                    show_script(&benign.script)
                ),
            );
        }
        for f in &c.fields {
            *self.stats.scripted.entry(*f).or_default() += 1;
        }
    }

    /// Random MACs (and node identifiers) for the preview, and random config names for the
    /// boot listener, against pool nodes with benign boots.
    async fn mac_cases(&mut self, g: &mut Gen) {
        let mut ready = Vec::new();
        for (i, p) in self.pool.iter().enumerate() {
            let target = if i % 2 == 0 { "deploy" } else { "instance" };
            let mode = if i % 4 < 2 { "bios" } else { "uefi" };
            let b = self
                .render_benign(&p.uuid, &p.name, &p.mac, target, mode)
                .await;
            ready.push((b, Values::benign(&p.name, &p.mac, mode)));
        }
        for n in 0..MAC_CASES {
            let i = g.below(self.pool.len());
            let base = if g.chance(60) {
                let digits = hex_digits(&self.pool[i].mac);
                let mut b = [0u8; 6];
                for (k, o) in b.iter_mut().enumerate() {
                    *o = u8::from_str_radix(&digits[k * 2..k * 2 + 2], 16).unwrap();
                }
                b
            } else {
                g.mac_bytes()
            };
            let (mac, clean) = g.mac(base);
            let mut raw = mac.clone().into_bytes();
            if g.chance(5) {
                let len = 1 + g.below(3);
                raw.extend(g.bytes(len));
            }
            let clean = clean && raw == mac.as_bytes();
            let case = format!("MAC case {n}: {}", show(&String::from_utf8_lossy(&raw)));
            let uuid = self.pool[i].uuid.clone();
            let (ident, query) = match g.below(20) {
                0 => (uuid.clone(), String::new()),
                1 => (
                    uuid.clone(),
                    format!("?mac={}&mac={}", pct(&raw), pct(&raw)),
                ),
                2 => (uuid.clone(), "?mak=1".into()),
                3 => (uuid.clone(), "?mac".into()),
                4 => (pct(&raw), String::new()),
                _ => (uuid.clone(), format!("?mac={}", pct(&raw))),
            };
            self.preview_case(&case, &ready[i], &ident, &query, &raw, clean)
                .await;
            self.boot_path_case(&case, &ready, &raw, &base, clean).await;
        }
    }

    /// `GET /v1/nodes/{ident}/ipxe{query}`: a JSON error (400, 404, 409), or the node's
    /// script for the MAC in the query.
    async fn preview_case(
        &mut self,
        case: &str,
        (b, v): &(Benign, Values),
        ident: &str,
        query: &str,
        raw: &[u8],
        clean: bool,
    ) {
        let path = format!("/v1/nodes/{ident}/ipxe{query}");
        let r = self.s.request(Method::GET, &path, None, None).await;
        let st = r.status();
        let text = r.text().await.unwrap();
        *self.stats.previews.entry(st.as_u16()).or_default() += 1;
        let single_mac = query.starts_with("?mac=") && !query.contains('&');
        if st == StatusCode::OK {
            let digits = if query.is_empty() && ident.len() == 36 {
                b.hexhyp.replace('-', "")
            } else if single_mac {
                hex_digits(&String::from_utf8_lossy(raw))
            } else {
                self.fail(
                    case,
                    &format!("GET {path}: a script:\n{}", show_script(&text)),
                );
            };
            if digits.len() != 12 {
                self.fail(
                    case,
                    &format!(
                        "GET {path}: a script for a MAC with {} hex digits:\n{text}",
                        digits.len()
                    ),
                );
            }
            if let Err(e) = b.check(&text, &v.expect(b.target, &hexhyp_of(&digits))) {
                self.fail(case, &format!("GET {path}: {e}\n{}", show_script(&text)));
            }
            return;
        }
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| self.fail(case, &format!("GET {path}: {st}, not JSON: {text:?}")));
        let (code, field) =
            error_shape(st, &body).unwrap_or_else(|e| self.fail(case, &format!("GET {path}: {e}")));
        let fine = match st.as_u16() {
            400 => {
                (code == "invalid_mac" && field.as_deref() == Some("mac"))
                    || code == "invalid_query"
            }
            404 => code == "node_not_found" || code == "not_found",
            409 => code == "no_boot_target" || code == "no_macs",
            _ => false,
        };
        if !fine || (clean && single_mac) {
            self.fail(case, &format!("GET {path}: {st} {body}"));
        }
    }

    /// `GET /pxelinux.cfg/{name}`: 400 or 404, or the script of the node with that MAC.
    async fn boot_path_case(
        &mut self,
        case: &str,
        ready: &[(Benign, Values)],
        raw: &[u8],
        base: &[u8; 6],
        clean: bool,
    ) {
        let path = format!("/pxelinux.cfg/{}", pct(raw));
        let (st, text) = self.s.boot_get(&path).await;
        *self.stats.boot_paths.entry(st.as_u16()).or_default() += 1;
        let name = String::from_utf8_lossy(raw).into_owned();
        let name = match name.strip_prefix("01-") {
            Some(rest) if name.len() == 20 => rest.to_string(),
            _ => name,
        };
        let digits = hex_digits(&name);
        let owner = ready
            .iter()
            .position(|(b, _)| b.hexhyp.replace('-', "") == digits);
        let base_hexhyp = hexhyp_of(&base.map(|b| format!("{b:02x}")).concat());
        let a_node_has_it = ready.iter().any(|(b, _)| b.hexhyp == base_hexhyp);
        match st.as_u16() {
            200 => {
                let Some(o) = owner else {
                    self.fail(
                        case,
                        &format!("GET {path}: a script for a MAC no node has:\n{text}"),
                    );
                };
                let (b, v) = &ready[o];
                if let Err(e) = b.check(&text, &v.expect(b.target, &b.hexhyp)) {
                    self.fail(case, &format!("GET {path}: {e}\n{}", show_script(&text)));
                }
            }
            400 | 404 if !(clean && a_node_has_it) => {}
            _ => self.fail(case, &format!("GET {path}: {st} {text}")),
        }
    }

    /// Raw bodies that are not UTF-8, or not JSON, on every endpoint that reads one.
    async fn body_cases(&mut self, g: &mut Gen) {
        let invalid: &[&[u8]] = &[
            b"\xff",
            b"\xfe\xff",
            b"\xc0\xaf",
            b"\xc3",
            b"\x80",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"\xf8\x88\x80\x80\x80",
            b"\x00",
            b"\x1b",
            b"\n",
        ];
        for n in 0..BODY_CASES {
            let uuid = self.pool[g.below(self.pool.len())].uuid.clone();
            let (method, path) = match g.below(3) {
                0 => (Method::POST, "/v1/nodes".to_string()),
                1 => (Method::PATCH, format!("/v1/nodes/{uuid}")),
                _ => (Method::PUT, format!("/v1/nodes/{uuid}/boot")),
            };
            let bad = *g.rng.pick(invalid);
            let body: Vec<u8> = if g.chance(25) {
                // Random bytes with something that is not UTF-8 in them.
                let len = g.below(200);
                let mut b = g.bytes(len);
                let at = g.below(b.len() + 1);
                b.splice(at..at, [0xff, bad[0]]);
                b
            } else {
                // A valid document with a bad sequence or a lone surrogate in one string.
                let doc = if method == Method::PUT {
                    json!({"target": "deploy"})
                } else {
                    Values::benign("raw", &self.pool[0].mac, "bios").doc(false)
                };
                let mut b = serde_json::to_vec(&doc).unwrap();
                let quotes: Vec<usize> = b
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c == b'"')
                    .map(|(i, _)| i)
                    .collect();
                let at = quotes[g.below(quotes.len() / 2) * 2] + 1 + g.below(2);
                if g.chance(20) {
                    let escape: &str = g.pick(&["\\ud800", "\\udc00x"]);
                    b.splice(at..at, escape.bytes());
                } else {
                    b.splice(at..at, bad.iter().copied());
                }
                b
            };
            let case = format!(
                "body case {n}: {method} {path} {}",
                show(&String::from_utf8_lossy(&body))
            );
            let r = self
                .s
                .http
                .request(method.clone(), format!("{}{path}", self.s.api))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let st = r.status();
            let text = r.text().await.unwrap();
            let value: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| self.fail(&case, &format!("{st}, not JSON: {text:?}")));
            match error_shape(st, &value) {
                Ok((code, None)) if st == StatusCode::BAD_REQUEST && code == "invalid_body" => {}
                other => self.fail(&case, &format!("{st} {value}: {other:?}")),
            }
        }
        // Nothing was half-written.
        for p in self.pool {
            let (_, node) = self
                .s
                .call(Method::GET, &format!("/v1/nodes/{}", p.uuid), None)
                .await;
            assert_eq!(
                (&node["name"], &node["macs"]),
                (&json!(p.name), &json!([p.mac])),
                "seed {}",
                self.seed
            );
        }
    }
}

/// The regression: control characters in `kernel_append_params` went raw into the script,
/// and Debian's iPXE stopped reading the kernel line at the NUL, losing `initrd=`,
/// `BOOTIF=` and `|| goto retry`. Now every field that reaches a script, with random bytes
/// and code points, is either refused with a JSON error or yields a script that iPXE reads
/// exactly as the template intends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_control_characters_reach_the_ipxe_script() {
    let started = Instant::now();
    let (rng, seed) = Rng::from_env();
    eprintln!("script_fuzz: seed {seed} (replay with IRONBOOT_TEST_SEED={seed})");
    let s = TestServer::start(Db::Sqlite, CONFIG).await;
    let mut g = Gen::new(rng);

    // The regression itself, first and always.
    let mac = g.mac_bytes().map(|b| format!("{b:02x}")).join(":");
    let mut v = Values::benign("regression", &mac, "uefi");
    for bad in ["\u{0}", "\u{1}", "\u{7}", "\u{1b}", "\u{7f}"] {
        v.args = Some(format!("console=ttyS0{bad} quiet"));
        let r = s.call(Method::POST, "/v1/nodes", Some(v.doc(false))).await;
        let (code, field) = error_shape(r.0, &r.1)
            .unwrap_or_else(|e| panic!("kernel_append_params with {bad:?}: {e}"));
        assert_eq!(
            (r.0, code.as_str(), field.as_deref()),
            (
                StatusCode::BAD_REQUEST,
                "invalid_field",
                Some("instance_info.kernel_append_params")
            ),
            "{bad:?}: {}",
            r.1
        );
    }

    let mut pool = Vec::new();
    for i in 0..POOL {
        let mac = g.mac_bytes().map(|b| format!("{b:02x}")).join(":");
        let name = format!("pool-{i}-{}", seed % 100_000);
        let v = Values::benign(&name, &mac, "bios");
        let (st, node) = s.call(Method::POST, "/v1/nodes", Some(v.doc(false))).await;
        assert_eq!(st, StatusCode::CREATED, "{node}");
        pool.push(PoolNode {
            uuid: node["uuid"].as_str().unwrap().into(),
            name,
            mac,
        });
    }

    // Field cases, drawn in order, run in LANES lanes that own disjoint pool nodes.
    let per_lane = POOL / LANES;
    let mut lane_cases: Vec<Vec<Case>> = (0..LANES).map(|_| Vec::new()).collect();
    for n in 0..FIELD_CASES {
        let c = g.case(n, &pool, seed);
        let lane = if c.create {
            n % LANES
        } else {
            c.pool / per_lane
        };
        lane_cases[lane].push(c);
    }
    let mut lanes: Vec<Lane> = pool
        .chunks(per_lane)
        .map(|nodes| Lane::new(&s, seed, nodes))
        .collect();
    for c in lane_cases.iter_mut().flatten() {
        c.pool %= per_lane;
    }
    let [a, b, c] = &mut lanes[..] else {
        unreachable!("LANES is 3")
    };
    let [ca, cb, cc] = <[Vec<Case>; LANES]>::try_from(lane_cases).unwrap();
    tokio::join!(a.run(ca), b.run(cb), c.run(cc));
    let fields_done = started.elapsed();

    let mut all = Lane::new(&s, seed, &pool);
    all.mac_cases(&mut g).await;
    all.body_cases(&mut g).await;
    for lane in lanes {
        all.stats.add(lane.stats);
    }

    let st = std::mem::take(&mut all.stats);
    drop(all);
    eprintln!(
        "script_fuzz: {FIELD_CASES} field cases in {:.1} s; {MAC_CASES} MAC cases and {BODY_CASES} raw bodies; {:.1} s in all",
        fields_done.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    eprintln!("  reached a checked script: {:?}", st.scripted);
    eprintln!("  refused: {:?}", st.refused);
    eprintln!("  error codes: {:?}; conflicts: {}", st.codes, st.conflicts);
    eprintln!("  preview statuses: {:?}", st.previews);
    eprintln!("  boot listener statuses: {:?}", st.boot_paths);
    // Both outcomes happened for every field that reaches a script, so the cases were
    // neither all refused nor all harmless.
    for field in [
        Field::Name,
        Field::Macs,
        Field::DeployKernel,
        Field::DeployRamdisk,
        Field::Kernel,
        Field::Ramdisk,
        Field::Args,
    ] {
        let (ok, no) = (
            st.scripted.get(&field).copied().unwrap_or(0),
            st.refused.get(&field).copied().unwrap_or(0),
        );
        assert!(
            ok >= 20 && no >= 20,
            "{}: {ok} scripts, {no} refusals; the generator is off (seed {seed})",
            field.path()
        );
    }
    for (what, map) in [("preview", &st.previews), ("boot listener", &st.boot_paths)] {
        for status in [200, 400, 404] {
            assert!(
                map.get(&status).copied().unwrap_or(0) >= 10,
                "{what}: too few {status} answers: {map:?} (seed {seed})"
            );
        }
    }
    s.stop().await;
}
