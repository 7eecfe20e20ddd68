//! The statement layer of a domU config: tokens, logical lines, literal values.
//!
//! xl reads its config with libxlu (`tools/libs/util/libxlu_cfg_l.l`): `KEY = VALUE`
//! settings separated by newlines or `;`, values that are strings in single or double
//! quotes, integers or `[ ... ]` lists (which may span lines and end in a comma), `#`
//! comments. xm ran the file as Python, so old configs may also hold `import` lines,
//! `if` blocks, computed values and triple-quoted strings. This lexer knows enough
//! Python to step over those without running anything: brackets of every kind nest (a
//! newline inside them does not end the statement), `\` at the end of a line continues
//! it, and the indentation of each statement is kept so that assignments inside a block
//! (`if ...:` and its indented body) can be told from unconditional ones.
//!
//! Every input is bounded: the caller caps the file's size, and here strings, list
//! lengths and nesting depth are capped, so no input allocates more than a small multiple
//! of its size or recurses deeper than [`MAX_DEPTH`].

use super::XenConfigError;

/// Deepest bracket nesting accepted (xl itself allows no nesting in the values it reads).
pub const MAX_DEPTH: usize = 8;
/// Most items a list may hold.
pub const MAX_LIST_ITEMS: usize = 1024;
/// Longest string literal accepted, in bytes.
pub const MAX_STRING_BYTES: usize = 64 * 1024;

/// A literal value of a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A quoted string (escapes decoded).
    Str(String),
    /// An integer (decimal, `0x` hexadecimal or `0` octal, as libxlu reads them).
    Int(i64),
    /// A list of values, each with the line it starts on.
    List(Vec<(Value, usize)>),
}

/// One statement of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// `KEY = VALUE`.
    Assign {
        /// The setting's name.
        key: String,
        /// The line the statement starts on (1-based).
        line: usize,
        /// The value, or why it is not a literal (an expression, a name, a float).
        value: Result<Value, &'static str>,
        /// Inside the indented body of a Python block (`if`, `for`, `def`, ...).
        in_block: bool,
    },
    /// Anything else (a Python statement): never run.
    Other {
        /// The line the statement starts on (1-based).
        line: usize,
        /// Settings the statement assigns to after a `:` on the same line
        /// (`if x: memory = 512`), which are conditional.
        assigns: Vec<String>,
        /// Inside the indented body of a Python block.
        in_block: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    /// A number that is not an integer imgconv reads (float, overflow, malformed).
    BadNumber,
    LBrack,
    RBrack,
    Comma,
    Eq,
    Colon,
    /// A statement separator: newline or `;` outside brackets.
    End,
    /// Any other punctuation (operators, parentheses, braces).
    Other,
}

struct Token {
    tok: Tok,
    line: usize,
    /// Columns of indentation when this token starts a line.
    indent: Option<usize>,
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    text: &'a str,
    line: usize,
    /// Open brackets: the character and the line it was opened on.
    open: Vec<(char, usize)>,
    at_line_start: bool,
    indent: usize,
}

fn syntax(line: usize, what: &'static str) -> XenConfigError {
    XenConfigError::Syntax { line, what }
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        Lexer {
            chars: text.char_indices().peekable(),
            text,
            line: 1,
            open: Vec::new(),
            at_line_start: true,
            indent: 0,
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().map(|&(_, c)| c)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next().map(|(_, c)| c)?;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn tokens(mut self) -> Result<Vec<Token>, XenConfigError> {
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\x0c' | '\r' => {
                    if self.at_line_start {
                        self.indent += if c == '\t' { 8 - self.indent % 8 } else { 1 };
                    }
                    self.bump();
                }
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                '\n' => {
                    self.bump();
                    if self.open.is_empty() {
                        self.push(&mut out, Tok::End, self.line - 1);
                        self.at_line_start = true;
                        self.indent = 0;
                    }
                }
                '\\' => {
                    // Line continuation: a backslash right before the newline.
                    let line = self.line;
                    self.bump();
                    if self.peek() == Some('\r') {
                        self.bump();
                    }
                    if self.bump() != Some('\n') {
                        return Err(syntax(line, "a stray backslash outside a string"));
                    }
                }
                '\'' | '"' => {
                    let line = self.line;
                    let s = self.string(c)?;
                    self.push(&mut out, Tok::Str(s), line);
                }
                '0'..='9' => {
                    let line = self.line;
                    let t = self.number();
                    self.push(&mut out, t, line);
                }
                c if c == '_' || c.is_ascii_alphabetic() => {
                    let line = self.line;
                    let mut id = String::new();
                    while let Some(c) = self
                        .peek()
                        .filter(|c| *c == '_' || c.is_ascii_alphanumeric())
                    {
                        if id.len() >= 256 {
                            return Err(syntax(line, "a name longer than 256 characters"));
                        }
                        id.push(c);
                        self.bump();
                    }
                    self.push(&mut out, Tok::Ident(id), line);
                }
                '[' | '(' | '{' => {
                    let line = self.line;
                    if self.open.len() >= MAX_DEPTH {
                        return Err(XenConfigError::TooDeep {
                            line,
                            max: MAX_DEPTH,
                        });
                    }
                    self.open.push((c, line));
                    self.bump();
                    self.push(
                        &mut out,
                        if c == '[' { Tok::LBrack } else { Tok::Other },
                        line,
                    );
                }
                ']' | ')' | '}' => {
                    let line = self.line;
                    let want = match c {
                        ']' => '[',
                        ')' => '(',
                        _ => '{',
                    };
                    match self.open.pop() {
                        Some((o, _)) if o == want => {}
                        _ => {
                            return Err(syntax(line, "a closing bracket that closes nothing open"))
                        }
                    }
                    self.bump();
                    self.push(
                        &mut out,
                        if c == ']' { Tok::RBrack } else { Tok::Other },
                        line,
                    );
                }
                ',' | '=' | ':' | ';' => {
                    let line = self.line;
                    self.bump();
                    let t = match c {
                        ',' => Tok::Comma,
                        ':' => Tok::Colon,
                        ';' if self.open.is_empty() => Tok::End,
                        ';' => Tok::Other,
                        // `==`, `<=`, `>=`, `!=` are comparisons, not assignments.
                        _ if self.peek() == Some('=') => {
                            self.bump();
                            Tok::Other
                        }
                        _ => Tok::Eq,
                    };
                    self.push(&mut out, t, line);
                }
                '<' | '>' | '!' | '+' | '-' | '*' | '/' | '%' | '&' | '|' | '^' | '~' => {
                    let line = self.line;
                    self.bump();
                    // Augmented assignments (`+=`) and comparisons are one operator.
                    if self.peek() == Some('=') {
                        self.bump();
                    }
                    self.push(&mut out, Tok::Other, line);
                }
                _ => {
                    let line = self.line;
                    self.bump();
                    self.push(&mut out, Tok::Other, line);
                }
            }
        }
        if let Some(&(_, line)) = self.open.last() {
            return Err(syntax(line, "a bracket that is never closed"));
        }
        let line = self.line;
        self.push(&mut out, Tok::End, line);
        Ok(out)
    }

    fn push(&mut self, out: &mut Vec<Token>, tok: Tok, line: usize) {
        let indent = (self.at_line_start && tok != Tok::End).then_some(self.indent);
        if tok != Tok::End {
            self.at_line_start = false;
        }
        out.push(Token { tok, line, indent });
    }

    /// A quoted string; the opening quote is next. Python's triple quotes span lines.
    fn string(&mut self, quote: char) -> Result<String, XenConfigError> {
        let line = self.line;
        self.bump();
        let rest = &self.text[self.chars.peek().map_or(self.text.len(), |&(i, _)| i)..];
        let triple = rest.starts_with(&format!("{quote}{quote}"));
        if triple {
            self.bump();
            self.bump();
        }
        let mut s = String::new();
        loop {
            let Some(c) = self.bump() else {
                return Err(syntax(line, "a string that is never closed"));
            };
            if s.len() >= MAX_STRING_BYTES {
                return Err(XenConfigError::StringTooLong {
                    line,
                    max: MAX_STRING_BYTES,
                });
            }
            match c {
                '\n' if !triple => return Err(syntax(line, "a string that is never closed")),
                c if c == quote => {
                    if !triple {
                        return Ok(s);
                    }
                    if self.peek() == Some(quote) {
                        self.bump();
                        if self.peek() == Some(quote) {
                            self.bump();
                            return Ok(s);
                        }
                        s.push(quote);
                    }
                    s.push(quote);
                }
                '\\' => match self.bump() {
                    None => return Err(syntax(line, "a string that is never closed")),
                    Some('\n') => {}
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some('r') => s.push('\r'),
                    Some(e @ ('\\' | '\'' | '"')) => s.push(e),
                    // Unknown escapes keep their backslash, as Python does.
                    Some(e) => {
                        s.push('\\');
                        s.push(e);
                    }
                },
                c => s.push(c),
            }
        }
    }

    /// A number: decimal, `0x` hexadecimal, `0` octal (libxlu's `strtoul(.., 0)`).
    fn number(&mut self) -> Tok {
        let mut text = String::new();
        while let Some(c) = self
            .peek()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
        {
            if text.len() < 64 {
                text.push(c);
            }
            self.bump();
        }
        let parsed = if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"))
        {
            i64::from_str_radix(hex, 16).ok()
        } else if text.len() > 1 && text.starts_with('0') {
            i64::from_str_radix(&text[1..], 8).ok()
        } else {
            text.parse::<i64>().ok()
        };
        parsed.map_or(Tok::BadNumber, Tok::Int)
    }
}

/// The statements of `text`, in order.
pub fn statements(text: &str) -> Result<Vec<Statement>, XenConfigError> {
    let tokens = Lexer::new(text).tokens()?;
    let mut out = Vec::new();
    // The indentation of the statement that opened the innermost Python block (a line
    // ending in `:`), while its body lasts.
    let mut block: Option<usize> = None;
    for stmt in tokens.split(|t| t.tok == Tok::End) {
        let Some(first) = stmt.first() else { continue };
        let indent = first.indent.unwrap_or(0);
        let in_block = match block {
            Some(b) if indent > b => true,
            _ => {
                block = None;
                false
            }
        };
        let line = first.line;
        match stmt {
            [Token {
                tok: Tok::Ident(key),
                ..
            }, Token { tok: Tok::Eq, .. }, rest @ ..] => {
                let value = literal(rest);
                out.push(Statement::Assign {
                    key: key.clone(),
                    line,
                    value,
                    in_block,
                });
            }
            _ => {
                if !in_block && stmt.last().is_some_and(|t| t.tok == Tok::Colon) {
                    block = Some(indent);
                }
                let assigns = stmt
                    .windows(2)
                    .filter_map(|w| match (&w[0].tok, &w[1].tok) {
                        (Tok::Ident(k), Tok::Eq) => Some(k.clone()),
                        _ => None,
                    })
                    .collect();
                out.push(Statement::Other {
                    line,
                    assigns,
                    in_block,
                });
            }
        }
    }
    Ok(out)
}

/// The tokens of a value as one literal, or why they are not one.
fn literal(tokens: &[Token]) -> Result<Value, &'static str> {
    let mut pos = 0;
    let v = value(tokens, &mut pos)?;
    if pos != tokens.len() {
        return Err("an expression, not a literal value");
    }
    Ok(v)
}

fn value(tokens: &[Token], pos: &mut usize) -> Result<Value, &'static str> {
    let Some(t) = tokens.get(*pos) else {
        return Err("no value after `=`");
    };
    *pos += 1;
    match &t.tok {
        Tok::Str(s) => Ok(Value::Str(s.clone())),
        Tok::Int(i) => Ok(Value::Int(*i)),
        Tok::BadNumber => Err("a number that is not an integer imgconv reads"),
        Tok::LBrack => {
            let mut items = Vec::new();
            loop {
                match tokens.get(*pos).map(|t| &t.tok) {
                    Some(Tok::RBrack) => {
                        *pos += 1;
                        return Ok(Value::List(items));
                    }
                    Some(_) => {
                        if items.len() >= MAX_LIST_ITEMS {
                            return Err("a list longer than imgconv reads");
                        }
                        let line = tokens[*pos].line;
                        items.push((value(tokens, pos)?, line));
                        match tokens.get(*pos).map(|t| &t.tok) {
                            Some(Tok::Comma) => *pos += 1,
                            Some(Tok::RBrack) => {}
                            _ => return Err("list items not separated by commas"),
                        }
                    }
                    None => return Err("a list that is never closed"),
                }
            }
        }
        Tok::Ident(_) => Err("a name or expression, not a literal value"),
        _ => Err("an expression, not a literal value"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(s: &Statement) -> (&str, usize, &Result<Value, &'static str>, bool) {
        match s {
            Statement::Assign {
                key,
                line,
                value,
                in_block,
            } => (key, *line, value, *in_block),
            other => panic!("not an assignment: {other:?}"),
        }
    }

    #[test]
    fn values_lines_and_separators() {
        let st = statements(
            "# c\nname = \"web1\" ; memory=0x200\nvcpus = 010\ndisk = [ 'a', # one\n  \"b\",\n]\n",
        )
        .unwrap();
        assert_eq!(st.len(), 4);
        assert_eq!(
            assign(&st[0]),
            ("name", 2, &Ok(Value::Str("web1".into())), false)
        );
        assert_eq!(assign(&st[1]), ("memory", 2, &Ok(Value::Int(512)), false));
        assert_eq!(assign(&st[2]), ("vcpus", 3, &Ok(Value::Int(8)), false));
        assert_eq!(
            assign(&st[3]),
            (
                "disk",
                4,
                &Ok(Value::List(vec![
                    (Value::Str("a".into()), 4),
                    (Value::Str("b".into()), 5)
                ])),
                false
            )
        );
    }

    #[test]
    fn escapes_and_triple_quotes() {
        let st = statements("a = 'it\\'s \\\\ \\q'\nb = '''x\n'y'\n'''\nc = \"\"\n").unwrap();
        assert_eq!(assign(&st[0]).2, &Ok(Value::Str("it's \\ \\q".into())));
        assert_eq!(assign(&st[1]).2, &Ok(Value::Str("x\n'y'\n".into())));
        assert_eq!(assign(&st[2]).2, &Ok(Value::Str(String::new())));
        assert_eq!(assign(&st[2]).1, 5);
    }

    #[test]
    fn python_blocks_are_told_from_top_level_settings() {
        let text = "import os, re\narch = os.uname()[4]\nif re.search('64', arch):\n    memory = 1024\n    x = (1,\n 2)\nelse: memory = 512\nvcpus = 2\n  maxmem = 4\n";
        let st = statements(text).unwrap();
        assert!(matches!(
            st[0],
            Statement::Other {
                line: 1,
                in_block: false,
                ..
            }
        ));
        let (k, line, v, _) = assign(&st[1]);
        assert_eq!((k, line), ("arch", 2));
        assert!(v.is_err());
        assert!(matches!(
            st[2],
            Statement::Other {
                line: 3,
                in_block: false,
                ..
            }
        ));
        assert_eq!(assign(&st[3]), ("memory", 4, &Ok(Value::Int(1024)), true));
        assert!(assign(&st[4]).3);
        match &st[5] {
            Statement::Other {
                line: 7, assigns, ..
            } => assert_eq!(assigns, &["memory"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(assign(&st[6]), ("vcpus", 8, &Ok(Value::Int(2)), false));
        // Indented without a block before it: xl reads it as any other setting.
        assert_eq!(assign(&st[7]), ("maxmem", 9, &Ok(Value::Int(4)), false));
    }

    #[test]
    fn comparisons_and_augmented_assignments_are_not_settings() {
        let st = statements("memory == 5\nmemory += 5\nmemory = 5 + 1\n").unwrap();
        assert!(matches!(st[0], Statement::Other { .. }));
        assert!(matches!(st[1], Statement::Other { .. }));
        assert!(assign(&st[2]).2.is_err());
    }

    #[test]
    fn malformed_input_is_a_typed_error_with_its_line() {
        for (text, want_line) in [
            ("a = 1\nb = 'open\n", 2),
            ("a = [\n'x',\n", 1),
            ("a = 1\n\nb = ]\n", 3),
            ("a = (]\n", 1),
            ("a = '''never\n\n", 1),
            ("a = 1 \\ b\n", 1),
        ] {
            match statements(text) {
                Err(XenConfigError::Syntax { line, .. }) => assert_eq!(line, want_line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn nesting_lists_and_strings_are_bounded() {
        let deep = format!("a = {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            statements(&deep),
            Err(XenConfigError::TooDeep {
                line: 1,
                max: MAX_DEPTH
            })
        ));
        let long = format!("a = [{}]\n", "1,".repeat(MAX_LIST_ITEMS + 1));
        let st = statements(&long).unwrap();
        assert_eq!(assign(&st[0]).2, &Err("a list longer than imgconv reads"));
        let big = format!("\n\na = '{}'\n", "x".repeat(MAX_STRING_BYTES + 1));
        assert!(matches!(
            statements(&big),
            Err(XenConfigError::StringTooLong { line: 3, .. })
        ));
        assert_eq!(
            assign(&statements("a = 99999999999999999999\n").unwrap()[0]).2,
            &Err("a number that is not an integer imgconv reads")
        );
    }
}
