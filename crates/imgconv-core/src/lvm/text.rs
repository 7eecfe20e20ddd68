//! LVM2's text metadata format: the volume group description kept in each metadata area.
//!
//! The syntax is libdevmapper's configuration language (lvm2 `libdm/libdm-config.c`, the
//! parser LVM uses to import metadata, `lib/format_text/import_vsn1.c`):
//!
//! * a file is a list of entries; an entry is `key = value` or `name { entries }`;
//! * a value is an integer (optionally signed), a floating-point number, a string in
//!   double quotes (a backslash escapes the next character), a string in single quotes
//!   (no escapes), a bare word, or a list `[ v, v, ... ]` of such values (the commas are
//!   optional; lists do not nest);
//! * `#` starts a comment that runs to the end of the line; a NUL byte ends the text (the
//!   metadata area stores the text with a trailing NUL);
//! * a key or section name runs until white space, `#`, `=`, `{` or `}`.
//!
//! The metadata LVM writes (`lib/format_text/export.c`) is one top-level section named
//! after the volume group, followed by `contents`, `version`, `description`,
//! `creation_host` and `creation_time` entries.
//!
//! Untrusted input: the text is at most [`MAX_TEXT`] bytes, sections nest at most
//! [`MAX_DEPTH`] deep, and every malformed input is a [`TextError`] naming the line.
//! A key given twice in one section is an error (LVM never writes one, and a second
//! definition of a volume must not be ignored silently).

/// The largest metadata text accepted, in bytes. LVM keeps each copy under half of its
/// metadata area (`(size - 512) / 2 - 512`, lvm2 `lib/format_text/format-text.c`); the
/// default area is 1 MiB, so real metadata stays far below this bound even for volume
/// groups with thousands of volumes.
pub const MAX_TEXT: usize = 4 << 20;

/// The deepest nesting of sections accepted. LVM's metadata nests four deep (volume
/// group, `logical_volumes`, a volume, a segment).
pub const MAX_DEPTH: usize = 16;

/// A value of an entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A number with a fractional part.
    Float(f64),
    /// A quoted or bare string.
    Str(String),
    /// A list of values (never nested).
    List(Vec<Value>),
}

impl Value {
    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The list, if this is one.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
}

/// One entry of a section: a value or a nested section.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `key = value`.
    Value(Value),
    /// `name { ... }`.
    Section(Section),
}

/// A section: its entries in the order written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Section {
    /// `(key, item)` pairs; keys are unique within a section.
    pub entries: Vec<(String, Item)>,
}

impl Section {
    /// The item named `key`.
    pub fn get(&self, key: &str) -> Option<&Item> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, i)| i)
    }

    /// The value named `key`, if it is a value.
    pub fn value(&self, key: &str) -> Option<&Value> {
        match self.get(key)? {
            Item::Value(v) => Some(v),
            Item::Section(_) => None,
        }
    }

    /// The section named `key`, if it is a section.
    pub fn section(&self, key: &str) -> Option<&Section> {
        match self.get(key)? {
            Item::Section(s) => Some(s),
            Item::Value(_) => None,
        }
    }

    /// The nested sections, in order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.entries.iter().filter_map(|(k, i)| match i {
            Item::Section(s) => Some((k.as_str(), s)),
            Item::Value(_) => None,
        })
    }

    /// The integer named `key`.
    pub fn int(&self, key: &str) -> Option<i64> {
        self.value(key)?.as_int()
    }

    /// The string named `key`.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.value(key)?.as_str()
    }

    /// The strings of the list named `key` (non-strings are skipped); empty when absent.
    pub fn str_list(&self, key: &str) -> Vec<&str> {
        self.value(key)
            .and_then(Value::as_list)
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }
}

/// Metadata text that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// The text is larger than [`MAX_TEXT`].
    #[error("metadata text of {len} bytes is larger than the {max} bytes accepted")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Sections nest deeper than [`MAX_DEPTH`].
    #[error("metadata text line {line}: sections nest deeper than {max}")]
    TooDeep {
        /// 1-based line.
        line: usize,
        /// The bound.
        max: usize,
    },
    /// A syntax error.
    #[error("metadata text line {line}: {why}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// What was expected or found.
        why: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    SectionBegin,
    SectionEnd,
    ListBegin,
    ListEnd,
    Comma,
    Eq,
    Int(i64),
    Float(f64),
    Str(String),
    Word(String),
    Eof,
}

struct Lexer<'a> {
    text: &'a [u8],
    pos: usize,
    line: usize,
}

fn ends_word(c: u8) -> bool {
    c.is_ascii_whitespace() || matches!(c, b'#' | b'=' | b'{' | b'}' | 0)
}

impl<'a> Lexer<'a> {
    fn new(text: &'a [u8]) -> Self {
        // The text ends at its first NUL byte.
        let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
        Lexer {
            text: &text[..end],
            pos: 0,
            line: 1,
        }
    }

    fn syntax(&self, why: impl Into<String>) -> TextError {
        TextError::Syntax {
            line: self.line,
            why: why.into(),
        }
    }

    fn skip_space(&mut self) {
        while let Some(&c) = self.text.get(self.pos) {
            if c == b'#' {
                while self.text.get(self.pos).is_some_and(|&c| c != b'\n') {
                    self.pos += 1;
                }
            } else if c.is_ascii_whitespace() {
                if c == b'\n' {
                    self.line += 1;
                }
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    /// The next token; `value` says whether a value may stand here (after `=`, `[` or
    /// `,`), which decides whether a leading digit or sign starts a number.
    fn next(&mut self, value: bool) -> Result<Token, TextError> {
        self.skip_space();
        let Some(&c) = self.text.get(self.pos) else {
            return Ok(Token::Eof);
        };
        let start = self.pos;
        self.pos += 1;
        Ok(match c {
            b'{' => Token::SectionBegin,
            b'}' => Token::SectionEnd,
            b'[' => Token::ListBegin,
            b']' => Token::ListEnd,
            b',' => Token::Comma,
            b'=' => Token::Eq,
            b'"' => {
                let mut s = Vec::new();
                loop {
                    match self.text.get(self.pos) {
                        None => return Err(self.syntax("a string has no closing quote")),
                        Some(b'"') => {
                            self.pos += 1;
                            break;
                        }
                        Some(b'\\') if self.pos + 1 < self.text.len() => {
                            s.push(self.text[self.pos + 1]);
                            self.pos += 2;
                        }
                        Some(&b) => {
                            if b == b'\n' {
                                self.line += 1;
                            }
                            s.push(b);
                            self.pos += 1;
                        }
                    }
                }
                Token::Str(String::from_utf8_lossy(&s).into_owned())
            }
            b'\'' => {
                let rest = &self.text[self.pos..];
                let Some(end) = rest.iter().position(|&b| b == b'\'') else {
                    return Err(self.syntax("a string has no closing quote"));
                };
                let s = &rest[..end];
                self.line += s.iter().filter(|&&b| b == b'\n').count();
                self.pos += end + 1;
                Token::Str(String::from_utf8_lossy(s).into_owned())
            }
            b'0'..=b'9' | b'+' | b'-' | b'.' if value => {
                let mut float = c == b'.';
                while let Some(&d) = self.text.get(self.pos) {
                    if d.is_ascii_digit() {
                        self.pos += 1;
                    } else if d == b'.' && !float {
                        float = true;
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                let word = std::str::from_utf8(&self.text[start..self.pos]).unwrap_or("");
                if float {
                    Token::Float(
                        word.parse()
                            .map_err(|_| self.syntax(format!("bad number {word:?}")))?,
                    )
                } else {
                    Token::Int(
                        word.parse()
                            .map_err(|_| self.syntax(format!("bad integer {word:?}")))?,
                    )
                }
            }
            _ => {
                while self.text.get(self.pos).is_some_and(|&c| !ends_word(c)) {
                    self.pos += 1;
                }
                Token::Word(String::from_utf8_lossy(&self.text[start..self.pos]).into_owned())
            }
        })
    }
}

struct Parser<'a> {
    lex: Lexer<'a>,
    tok: Token,
}

impl Parser<'_> {
    fn advance(&mut self, value: bool) -> Result<(), TextError> {
        self.tok = self.lex.next(value)?;
        Ok(())
    }

    /// Entries until `}` (when `depth > 0`) or the end of the text.
    fn entries(&mut self, depth: usize) -> Result<Section, TextError> {
        let mut section = Section::default();
        loop {
            let key = match &self.tok {
                Token::Eof if depth == 0 => return Ok(section),
                Token::Eof => return Err(self.lex.syntax("a section has no closing `}`")),
                Token::SectionEnd if depth > 0 => {
                    self.advance(false)?;
                    return Ok(section);
                }
                Token::Word(w) => w.clone(),
                other => {
                    return Err(self
                        .lex
                        .syntax(format!("expected a key or section name, found {other:?}")))
                }
            };
            if section.get(&key).is_some() {
                return Err(self.lex.syntax(format!("`{key}` is defined twice")));
            }
            self.advance(false)?;
            let item = match self.tok {
                Token::SectionBegin => {
                    if depth + 1 > MAX_DEPTH {
                        return Err(TextError::TooDeep {
                            line: self.lex.line,
                            max: MAX_DEPTH,
                        });
                    }
                    self.advance(false)?;
                    Item::Section(self.entries(depth + 1)?)
                }
                Token::Eq => {
                    self.advance(true)?;
                    let v = self.value()?;
                    self.advance(false)?;
                    Item::Value(v)
                }
                ref other => {
                    return Err(self.lex.syntax(format!(
                        "expected `=` or `{{` after `{key}`, found {other:?}"
                    )))
                }
            };
            section.entries.push((key, item));
        }
    }

    /// A value starting at the current token (which stays the value's last token).
    fn value(&mut self) -> Result<Value, TextError> {
        match &self.tok {
            Token::ListBegin => {
                let mut items = Vec::new();
                self.advance(true)?;
                loop {
                    match &self.tok {
                        Token::ListEnd => return Ok(Value::List(items)),
                        Token::Comma => {}
                        Token::ListBegin => {
                            return Err(self.lex.syntax("lists do not nest"));
                        }
                        _ => items.push(self.scalar()?),
                    }
                    self.advance(true)?;
                }
            }
            _ => self.scalar(),
        }
    }

    fn scalar(&self) -> Result<Value, TextError> {
        Ok(match &self.tok {
            Token::Int(i) => Value::Int(*i),
            Token::Float(f) => Value::Float(*f),
            Token::Str(s) | Token::Word(s) => Value::Str(s.clone()),
            other => {
                return Err(self
                    .lex
                    .syntax(format!("expected a value, found {other:?}")))
            }
        })
    }
}

/// Parse metadata text (up to its first NUL byte) into its top-level section.
pub fn parse(text: &[u8]) -> Result<Section, TextError> {
    if text.len() > MAX_TEXT {
        return Err(TextError::TooLarge {
            len: text.len(),
            max: MAX_TEXT,
        });
    }
    let mut p = Parser {
        lex: Lexer::new(text),
        tok: Token::Eof,
    };
    p.advance(false)?;
    p.entries(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"VolGroup00 {
id = "cVcBHY-Lmyc-uRn2-Wp7k-eUDq-ieud-Vcow41"
seqno = 6
status = ["RESIZEABLE", "READ", "WRITE"]
flags = []
extent_size = 8192   # sectors
physical_volumes {
pv0 {
id = "bHIoxV-yq75-dE94-9CzU-Zj9c-Mayi-O5EScm"
device = "/dev/loop0"	# Hint only
pe_start = 2048
}
}
logical_volumes {
LogVol00 {
segment1 {
stripes = [
"pv0", 0
]
}
}
}
}
# Generated by LVM2
contents = "Text Format Volume Group"
version = 1
description = "Write from \"lvcreate\" -n x"
ratio = 1.5
neg = -3
bare = word
"#;

    #[test]
    fn parses_what_lvm_writes() {
        let mut text = SAMPLE.as_bytes().to_vec();
        text.extend_from_slice(b"\0garbage after the NUL { {");
        let top = parse(&text).unwrap();
        let vg = top.section("VolGroup00").unwrap();
        assert_eq!(vg.int("seqno"), Some(6));
        assert_eq!(vg.int("extent_size"), Some(8192));
        assert_eq!(vg.str_list("status"), ["RESIZEABLE", "READ", "WRITE"]);
        assert_eq!(vg.value("flags"), Some(&Value::List(vec![])));
        let pv0 = vg
            .section("physical_volumes")
            .unwrap()
            .section("pv0")
            .unwrap();
        assert_eq!(pv0.str("device"), Some("/dev/loop0"));
        let seg = vg
            .section("logical_volumes")
            .unwrap()
            .section("LogVol00")
            .unwrap()
            .section("segment1")
            .unwrap();
        assert_eq!(
            seg.value("stripes"),
            Some(&Value::List(vec![Value::Str("pv0".into()), Value::Int(0)]))
        );
        assert_eq!(top.int("version"), Some(1));
        assert_eq!(top.str("description"), Some("Write from \"lvcreate\" -n x"));
        assert_eq!(top.value("ratio"), Some(&Value::Float(1.5)));
        assert_eq!(top.int("neg"), Some(-3));
        assert_eq!(top.str("bare"), Some("word"));
        assert_eq!(top.sections().count(), 1);
    }

    #[test]
    fn single_quotes_and_commaless_lists() {
        let top = parse(b"a = ['x' 'y' 3]\nb { }").unwrap();
        assert_eq!(
            top.value("a"),
            Some(&Value::List(vec![
                Value::Str("x".into()),
                Value::Str("y".into()),
                Value::Int(3)
            ]))
        );
        assert_eq!(top.section("b"), Some(&Section::default()));
    }

    #[test]
    fn malformed_text_is_an_error_naming_the_line() {
        for (text, line) in [
            ("a {\n b = 1\n", 3),
            ("a = \"open", 1),
            ("a = 'open", 1),
            ("a\n\n= ", 3),
            ("a = [1, [2]]", 1),
            ("a = 1\na = 2", 2),
            ("a b", 1),
            ("}", 1),
            ("a = 99999999999999999999", 1),
            ("a = }", 1),
            ("= 1", 1),
        ] {
            match parse(text.as_bytes()) {
                Err(TextError::Syntax { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn deep_nesting_and_huge_text_are_refused() {
        let deep = "a {".repeat(100_000);
        assert!(matches!(
            parse(deep.as_bytes()),
            Err(TextError::TooDeep { .. })
        ));
        let ok = format!("{}{}", "a {".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        parse(ok.as_bytes()).unwrap();
        let big = vec![b' '; MAX_TEXT + 1];
        assert!(matches!(parse(&big), Err(TextError::TooLarge { .. })));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x1234_5678_9abc_def0_u64;
        let alphabet = b"{}[]=,\"'#\\\n \tab01-.+\0";
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[(state % alphabet.len() as u64) as usize]
                })
                .collect();
            let _ = parse(&bytes);
        }
    }
}
