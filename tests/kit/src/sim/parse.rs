//! Tokenizer and parser for the small shell subset shared by GRUB script and U-Boot hush
//! as used by the shipped scripts: words with quoting and `$var`/`${var}`, `;`/newline,
//! `&&`/`||`, `if/then/elif/else/fi`, and GRUB's `menuentry ... { ... }`.

use super::SimError;

/// A piece of a word.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Part {
    /// Literal text; `true` if it came from quotes.
    Lit(String, bool),
    /// A variable reference; `true` if inside double quotes (no field splitting).
    Var(String, bool),
}

/// One word: parts concatenated without spaces.
pub(crate) type Word = Vec<Part>;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(Word),
    Sep,
    AndAnd,
    OrOr,
    LBrace,
    RBrace,
}

/// A parsed command.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// A simple command.
    Simple(Vec<Word>, usize),
    /// `a && b` / `a || b`.
    AndOr(Box<Node>, bool, Box<Node>),
    /// `if c; then b; elif c; then b; else b; fi`.
    If(Vec<(Vec<Node>, Vec<Node>)>, Option<Vec<Node>>),
    /// `menuentry args { body }` (GRUB).
    Menuentry(Vec<Word>, Vec<Node>),
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn read_var(chars: &[char], i: &mut usize, line: usize) -> Result<String, SimError> {
    // at chars[*i] == '$'
    *i += 1;
    if chars.get(*i) == Some(&'{') {
        let start = *i + 1;
        let end = chars[start..]
            .iter()
            .position(|&c| c == '}')
            .map(|p| start + p)
            .ok_or_else(|| SimError::Parse(line, "unterminated ${".into()))?;
        *i = end + 1;
        return Ok(chars[start..end].iter().collect());
    }
    let start = *i;
    while *i < chars.len() && is_name_char(chars[*i]) {
        *i += 1;
    }
    if start == *i {
        return Err(SimError::Parse(line, "'$' without a variable name".into()));
    }
    Ok(chars[start..*i].iter().collect())
}

fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, SimError> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\r' => i += 1,
            '\n' | ';' => {
                toks.push((Tok::Sep, line));
                if c == '\n' {
                    line += 1;
                }
                i += 1;
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '&' if chars.get(i + 1) == Some(&'&') => {
                toks.push((Tok::AndAnd, line));
                i += 2;
            }
            '|' if chars.get(i + 1) == Some(&'|') => {
                toks.push((Tok::OrOr, line));
                i += 2;
            }
            '{' | '}'
                if chars
                    .get(i + 1)
                    .map_or(true, |n| n.is_whitespace() || *n == ';') =>
            {
                toks.push((if c == '{' { Tok::LBrace } else { Tok::RBrace }, line));
                i += 1;
            }
            _ => {
                let mut word: Word = Vec::new();
                let mut lit = String::new();
                let flush = |lit: &mut String, word: &mut Word, quoted: bool| {
                    if !lit.is_empty() || quoted {
                        word.push(Part::Lit(std::mem::take(lit), quoted));
                    }
                };
                while i < chars.len() {
                    let c = chars[i];
                    if c.is_whitespace() || c == ';' {
                        break;
                    }
                    match c {
                        '\\' => {
                            if let Some(&n) = chars.get(i + 1) {
                                lit.push(n);
                            }
                            i += 2;
                        }
                        '\'' => {
                            flush(&mut lit, &mut word, false);
                            let start = i + 1;
                            let end = chars[start..]
                                .iter()
                                .position(|&c| c == '\'')
                                .map(|p| start + p)
                                .ok_or_else(|| SimError::Parse(line, "unterminated '".into()))?;
                            word.push(Part::Lit(chars[start..end].iter().collect(), true));
                            i = end + 1;
                        }
                        '"' => {
                            flush(&mut lit, &mut word, false);
                            i += 1;
                            let mut q = String::new();
                            let mut any = false;
                            loop {
                                match chars.get(i) {
                                    None => {
                                        return Err(SimError::Parse(line, "unterminated \"".into()))
                                    }
                                    Some('"') => {
                                        i += 1;
                                        break;
                                    }
                                    Some('\\')
                                        if matches!(chars.get(i + 1), Some('"' | '\\' | '$')) =>
                                    {
                                        q.push(chars[i + 1]);
                                        i += 2;
                                    }
                                    Some('$') => {
                                        if !q.is_empty() {
                                            word.push(Part::Lit(std::mem::take(&mut q), true));
                                        }
                                        word.push(Part::Var(read_var(&chars, &mut i, line)?, true));
                                        any = true;
                                    }
                                    Some(&c) => {
                                        if c == '\n' {
                                            line += 1;
                                        }
                                        q.push(c);
                                        i += 1;
                                    }
                                }
                            }
                            if !q.is_empty() || !any {
                                word.push(Part::Lit(q, true));
                            }
                        }
                        '$' => {
                            flush(&mut lit, &mut word, false);
                            word.push(Part::Var(read_var(&chars, &mut i, line)?, false));
                        }
                        _ => {
                            lit.push(c);
                            i += 1;
                        }
                    }
                }
                flush(&mut lit, &mut word, false);
                toks.push((Tok::Word(word), line));
            }
        }
    }
    Ok(toks)
}

/// The keyword a word spells, if it is a bare literal.
fn keyword(word: &Word) -> Option<&str> {
    match word.as_slice() {
        [Part::Lit(s, false)] => Some(s.as_str()),
        _ => None,
    }
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

impl Parser {
    fn line(&self) -> usize {
        self.toks
            .get(self.pos)
            .or(self.toks.last())
            .map(|t| t.1)
            .unwrap_or(0)
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }

    fn skip_seps(&mut self) {
        while self.peek() == Some(&Tok::Sep) {
            self.pos += 1;
        }
    }

    fn peek_keyword(&self) -> Option<&str> {
        match self.peek() {
            Some(Tok::Word(w)) => keyword(w),
            _ => None,
        }
    }

    fn expect_keyword(&mut self, kw: &str) -> Result<(), SimError> {
        self.skip_seps();
        if self.peek_keyword() == Some(kw) {
            self.pos += 1;
            Ok(())
        } else {
            Err(SimError::Parse(self.line(), format!("expected '{kw}'")))
        }
    }

    /// Commands until one of `stop` (not consumed), a `}` or the end.
    fn list(&mut self, stop: &[&str]) -> Result<Vec<Node>, SimError> {
        let mut out = Vec::new();
        loop {
            self.skip_seps();
            match self.peek() {
                None | Some(Tok::RBrace) => return Ok(out),
                Some(Tok::Word(w)) if keyword(w).is_some_and(|k| stop.contains(&k)) => {
                    return Ok(out)
                }
                _ => out.push(self.and_or()?),
            }
        }
    }

    fn and_or(&mut self) -> Result<Node, SimError> {
        let mut node = self.command()?;
        loop {
            let and = match self.peek() {
                Some(Tok::AndAnd) => true,
                Some(Tok::OrOr) => false,
                _ => return Ok(node),
            };
            self.pos += 1;
            self.skip_seps();
            node = Node::AndOr(Box::new(node), and, Box::new(self.command()?));
        }
    }

    fn command(&mut self) -> Result<Node, SimError> {
        let line = self.line();
        match self.peek_keyword() {
            Some("if") => {
                self.pos += 1;
                let mut branches = Vec::new();
                let mut otherwise = None;
                loop {
                    let cond = self.list(&["then"])?;
                    self.expect_keyword("then")?;
                    let body = self.list(&["elif", "else", "fi"])?;
                    branches.push((cond, body));
                    match self.peek_keyword() {
                        Some("elif") => self.pos += 1,
                        Some("else") => {
                            self.pos += 1;
                            otherwise = Some(self.list(&["fi"])?);
                            self.expect_keyword("fi")?;
                            break;
                        }
                        _ => {
                            self.expect_keyword("fi")?;
                            break;
                        }
                    }
                }
                Ok(Node::If(branches, otherwise))
            }
            Some(kw @ ("then" | "elif" | "else" | "fi")) => {
                Err(SimError::Parse(line, format!("unexpected '{kw}'")))
            }
            Some("menuentry") => {
                self.pos += 1;
                let mut args = Vec::new();
                loop {
                    match self.peek() {
                        Some(Tok::Word(w)) => {
                            args.push(w.clone());
                            self.pos += 1;
                        }
                        Some(Tok::LBrace) => {
                            self.pos += 1;
                            break;
                        }
                        _ => return Err(SimError::Parse(line, "menuentry without '{'".into())),
                    }
                }
                let body = self.list(&[])?;
                if self.peek() != Some(&Tok::RBrace) {
                    return Err(SimError::Parse(self.line(), "menuentry without '}'".into()));
                }
                self.pos += 1;
                Ok(Node::Menuentry(args, body))
            }
            _ => {
                let mut words = Vec::new();
                while let Some(Tok::Word(w)) = self.peek() {
                    words.push(w.clone());
                    self.pos += 1;
                }
                if words.is_empty() {
                    return Err(SimError::Parse(line, "expected a command".into()));
                }
                Ok(Node::Simple(words, line))
            }
        }
    }
}

/// Parses a whole script.
pub(crate) fn parse(src: &str) -> Result<Vec<Node>, SimError> {
    let mut p = Parser {
        toks: tokenize(src)?,
        pos: 0,
    };
    let nodes = p.list(&[])?;
    if p.peek().is_some() {
        return Err(SimError::Parse(p.line(), "unexpected '}'".into()));
    }
    Ok(nodes)
}

/// Expands a word into fields: quoted parts are kept whole, unquoted variables are split
/// on whitespace, and an unquoted empty expansion yields no field.
pub(crate) fn expand(word: &Word, get: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    for part in word {
        match part {
            Part::Lit(s, quoted) => {
                cur.push_str(s);
                have |= *quoted || !s.is_empty();
            }
            Part::Var(name, true) => {
                cur.push_str(&get(name).unwrap_or_default());
                have = true;
            }
            Part::Var(name, false) => {
                let value = get(name).unwrap_or_default();
                let starts_ws = value.starts_with(char::is_whitespace);
                let ends_ws = value.ends_with(char::is_whitespace);
                let pieces: Vec<&str> = value.split_whitespace().collect();
                if pieces.is_empty() {
                    if !value.is_empty() && have {
                        fields.push(std::mem::take(&mut cur));
                        have = false;
                    }
                    continue;
                }
                for (n, piece) in pieces.iter().enumerate() {
                    if (n > 0 || starts_ws) && have {
                        fields.push(std::mem::take(&mut cur));
                    }
                    cur.push_str(piece);
                    have = true;
                }
                if ends_ws {
                    fields.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
        }
    }
    if have {
        fields.push(cur);
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(src: &str) -> Vec<String> {
        let nodes = parse(src).unwrap();
        let Node::Simple(words, _) = &nodes[0] else {
            panic!()
        };
        let get = |n: &str| match n {
            "a" => Some("x y".to_string()),
            "e" => Some(String::new()),
            "p" => Some("(hd0,gpt1)/boot".to_string()),
            _ => None,
        };
        words.iter().flat_map(|w| expand(w, &get)).collect()
    }

    #[test]
    fn words_and_quotes() {
        assert_eq!(
            fields(r#"cmd "$a" $a "${p}/f" k="$a" $e "" '$a'"#),
            [
                "cmd",
                "x y",
                "x",
                "y",
                "(hd0,gpt1)/boot/f",
                "k=x y",
                "",
                "$a"
            ]
        );
        assert_eq!(fields(r#"set v="ota_$a""#), ["set", "v=ota_x y"]);
    }

    #[test]
    fn structure() {
        let nodes = parse(
            "if a; then b; elif c; then d\nelse e; fi\nx && y || z\nmenuentry t --id i {\n  l\n}\n",
        )
        .unwrap();
        assert_eq!(nodes.len(), 3);
        assert!(matches!(&nodes[0], Node::If(b, Some(_)) if b.len() == 2));
        assert!(matches!(&nodes[1], Node::AndOr(_, false, _)));
        assert!(matches!(&nodes[2], Node::Menuentry(a, b) if a.len() == 3 && b.len() == 1));
        assert!(parse("if a; then b").is_err());
        assert!(parse("fi").is_err());
        assert!(parse("echo \"x").is_err());
    }
}
