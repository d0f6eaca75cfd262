//! Counting the rows of a `mariadb-dump` stream as it passes through: a
//! small tokenizer that knows the dump's quoting (`'...'` and `"..."`
//! strings with backslash escapes and doubled quotes, `` `...` ``
//! identifiers with doubled backticks, comments, `DELIMITER` lines) and
//! counts the top-level `(...)` tuples of each `INSERT INTO `t` VALUES`
//! statement. Tables the dump creates are listed even when empty.

use backup_core::database::RowCounts;

/// Longest word or identifier kept (longer ones are cut; table names are at
/// most 64 characters).
const MAX_TOKEN: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Ident(String),
    Str,
    Open,
    Close,
    Comma,
    Dot,
    Other,
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Top,
    Word,
    Ident,
    IdentTick,
    Str(u8),
    StrEscape(u8),
    StrQuote(u8),
    Dash,
    LineComment,
    Slash,
    Block,
    BlockStar,
    DelimiterLine,
}

/// Where the statement parser is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stmt {
    /// Nothing seen yet in this statement.
    Start,
    /// Not a statement that matters: skip to its end.
    Skip,
    Insert,
    InsertInto,
    InsertTable(String),
    Columns(String, usize),
    Values(String),
    Tuple(String, usize),
    AfterTuple(String),
    Create,
    CreateTable,
}

/// Row counter fed with the dump's bytes in any chunks.
#[derive(Debug)]
pub(crate) struct TupleCounter {
    lex: Lex,
    buf: Vec<u8>,
    stmt: Stmt,
    delimiter: Vec<u8>,
    matched: usize,
    counts: RowCounts,
}

impl Default for TupleCounter {
    fn default() -> Self {
        Self::new()
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

impl TupleCounter {
    pub(crate) fn new() -> Self {
        Self {
            lex: Lex::Top,
            buf: Vec::new(),
            stmt: Stmt::Start,
            delimiter: b";".to_vec(),
            matched: 0,
            counts: RowCounts::new(),
        }
    }

    /// The counts so far (call after the last chunk).
    pub(crate) fn finish(mut self) -> RowCounts {
        match self.lex {
            Lex::Word => self.end_word(),
            Lex::IdentTick => self.end_ident(),
            _ => {}
        }
        self.counts
    }

    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    fn keep(&mut self, b: u8) {
        if self.buf.len() < MAX_TOKEN {
            self.buf.push(b);
        }
    }

    fn end_word(&mut self) {
        let word = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        self.lex = Lex::Top;
        if self.stmt == Stmt::Start && word.eq_ignore_ascii_case("DELIMITER") {
            self.lex = Lex::DelimiterLine;
            return;
        }
        self.token(Token::Word(word));
    }

    fn end_ident(&mut self) {
        let name = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        self.lex = Lex::Top;
        self.token(Token::Ident(name));
    }

    fn byte(&mut self, b: u8) {
        match self.lex {
            Lex::Top => self.top(b),
            Lex::Word => {
                if is_word_byte(b) && b != self.delimiter[0] {
                    self.keep(b);
                } else {
                    self.end_word();
                    self.byte(b);
                }
            }
            Lex::Ident => {
                if b == b'`' {
                    self.lex = Lex::IdentTick;
                } else {
                    self.keep(b);
                }
            }
            Lex::IdentTick => {
                if b == b'`' {
                    self.keep(b);
                    self.lex = Lex::Ident;
                } else {
                    self.end_ident();
                    self.byte(b);
                }
            }
            Lex::Str(q) => {
                if b == b'\\' {
                    self.lex = Lex::StrEscape(q);
                } else if b == q {
                    self.lex = Lex::StrQuote(q);
                }
            }
            Lex::StrEscape(q) => self.lex = Lex::Str(q),
            Lex::StrQuote(q) => {
                if b == q {
                    // A doubled quote: still inside.
                    self.lex = Lex::Str(q);
                } else {
                    self.lex = Lex::Top;
                    self.token(Token::Str);
                    self.byte(b);
                }
            }
            Lex::Dash | Lex::LineComment | Lex::Slash | Lex::Block | Lex::BlockStar => {
                self.comment(b);
            }
            Lex::DelimiterLine => {
                if b == b'\n' {
                    let line = String::from_utf8_lossy(&self.buf).into_owned();
                    self.buf.clear();
                    if let Some(d) = line.split_whitespace().next() {
                        self.delimiter = d.as_bytes().to_vec();
                    }
                    self.lex = Lex::Top;
                    self.matched = 0;
                    self.stmt = Stmt::Start;
                } else {
                    self.keep(b);
                }
            }
        }
    }

    /// A byte inside (or maybe starting) a comment.
    fn comment(&mut self, b: u8) {
        match self.lex {
            Lex::Dash => {
                if b == b'-' {
                    // `--` starts a comment only before a space or a line end.
                    self.lex = Lex::LineComment;
                    self.buf.clear();
                    self.buf.push(b'-');
                } else {
                    self.lex = Lex::Top;
                    self.token(Token::Other);
                    self.byte(b);
                }
            }
            Lex::LineComment => {
                if self.buf.first() == Some(&b'-') {
                    // Just after `--`.
                    self.buf.clear();
                    if !(b.is_ascii_whitespace() || b.is_ascii_control()) {
                        self.lex = Lex::Top;
                        self.token(Token::Other);
                        self.token(Token::Other);
                        self.byte(b);
                        return;
                    }
                }
                if b == b'\n' {
                    self.lex = Lex::Top;
                }
            }
            Lex::Slash => {
                if b == b'*' {
                    self.lex = Lex::Block;
                } else {
                    self.lex = Lex::Top;
                    self.token(Token::Other);
                    self.byte(b);
                }
            }
            Lex::Block if b == b'*' => self.lex = Lex::BlockStar,
            Lex::BlockStar => {
                if b == b'/' {
                    self.lex = Lex::Top;
                } else if b != b'*' {
                    self.lex = Lex::Block;
                }
            }
            _ => {}
        }
    }

    fn top(&mut self, b: u8) {
        if b == self.delimiter[self.matched] {
            self.matched += 1;
            if self.matched == self.delimiter.len() {
                self.matched = 0;
                self.token(Token::End);
            }
            return;
        }
        if self.matched > 0 {
            // A partial delimiter: those bytes were plain tokens.
            self.matched = 0;
            self.token(Token::Other);
            self.top(b);
            return;
        }
        match b {
            b'`' => {
                self.buf.clear();
                self.lex = Lex::Ident;
            }
            b'\'' | b'"' => self.lex = Lex::Str(b),
            b'-' => self.lex = Lex::Dash,
            b'#' => {
                self.buf.clear();
                self.lex = Lex::LineComment;
            }
            b'/' => self.lex = Lex::Slash,
            b'(' => self.token(Token::Open),
            b')' => self.token(Token::Close),
            b',' => self.token(Token::Comma),
            b'.' => self.token(Token::Dot),
            _ if b.is_ascii_whitespace() => {}
            _ if is_word_byte(b) => {
                self.buf.clear();
                self.buf.push(b);
                self.lex = Lex::Word;
            }
            _ => self.token(Token::Other),
        }
    }

    fn token(&mut self, token: Token) {
        if token == Token::End {
            self.stmt = Stmt::Start;
            return;
        }
        let word = |t: &Token, w: &str| matches!(t, Token::Word(x) if x.eq_ignore_ascii_case(w));
        let stmt = std::mem::replace(&mut self.stmt, Stmt::Skip);
        self.stmt = match stmt {
            Stmt::Start if word(&token, "INSERT") => Stmt::Insert,
            Stmt::Start if word(&token, "CREATE") => Stmt::Create,
            Stmt::Insert if word(&token, "INTO") => Stmt::InsertInto,
            Stmt::Insert if word(&token, "IGNORE") => Stmt::Insert,
            Stmt::InsertInto => match token {
                Token::Ident(name) | Token::Word(name) => Stmt::InsertTable(name),
                _ => Stmt::Skip,
            },
            Stmt::InsertTable(name) => match token {
                // `db`.`t`: the table is the last part.
                Token::Dot => Stmt::InsertInto,
                Token::Open => Stmt::Columns(name, 1),
                ref t if word(t, "VALUES") || word(t, "VALUE") => Stmt::Values(name),
                _ => Stmt::Skip,
            },
            Stmt::Columns(name, depth) => match token {
                Token::Open => Stmt::Columns(name, depth + 1),
                Token::Close if depth == 1 => Stmt::InsertTable(name),
                Token::Close => Stmt::Columns(name, depth - 1),
                _ => Stmt::Columns(name, depth),
            },
            Stmt::Values(name) => match token {
                Token::Open => {
                    *self.counts.entry(name.clone()).or_insert(0) += 1;
                    Stmt::Tuple(name, 1)
                }
                _ => Stmt::Skip,
            },
            Stmt::Tuple(name, depth) => match token {
                Token::Open => Stmt::Tuple(name, depth + 1),
                Token::Close if depth == 1 => Stmt::AfterTuple(name),
                Token::Close => Stmt::Tuple(name, depth - 1),
                _ => Stmt::Tuple(name, depth),
            },
            Stmt::AfterTuple(name) => match token {
                Token::Comma => Stmt::Values(name),
                _ => Stmt::Skip,
            },
            Stmt::Create if word(&token, "TABLE") => Stmt::CreateTable,
            Stmt::CreateTable => match token {
                ref t if word(t, "IF") || word(t, "NOT") || word(t, "EXISTS") => Stmt::CreateTable,
                Token::Ident(name) | Token::Word(name) => {
                    self.counts.entry(name).or_insert(0);
                    Stmt::Skip
                }
                _ => Stmt::Skip,
            },
            _ => Stmt::Skip,
        };
    }
}

/// Counts the rows of a whole dump (for tests and small inputs).
#[cfg(test)]
pub(crate) fn count(dump: &[u8], chunk: usize) -> RowCounts {
    let mut counter = TupleCounter::new();
    for part in dump.chunks(chunk.max(1)) {
        counter.feed(part);
    }
    counter.finish()
}

#[cfg(test)]
mod tests {
    use super::count;

    fn counts(dump: &str) -> Vec<(String, u64)> {
        let whole = count(dump.as_bytes(), usize::MAX);
        // Every chunking gives the same answer.
        for chunk in [1, 2, 3, 7] {
            assert_eq!(count(dump.as_bytes(), chunk), whole, "chunk {chunk}");
        }
        whole.into_iter().collect()
    }

    fn v(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
        pairs.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
    }

    #[test]
    fn extended_inserts_are_counted_per_table() {
        let dump = "-- MariaDB dump\n/*!40101 SET NAMES utf8mb4 */;\n\
            DROP TABLE IF EXISTS `t`;\nCREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  PRIMARY KEY (`id`)\n);\n\
            CREATE TABLE `empty` (`x` int);\n\
            INSERT INTO `t` VALUES\n(1,'a'),\n(2,'b');\nINSERT INTO `t` VALUES (3,NULL);\n";
        assert_eq!(counts(dump), v(&[("empty", 0), ("t", 3)]));
    }

    #[test]
    fn quotes_escapes_and_parentheses_inside_strings() {
        let dump = r#"CREATE TABLE `Odd``N` (a text);
INSERT INTO `Odd``N` VALUES (1,'a\'b\\c\n(x)),(',0x00FF),(2,'it''s ); INSERT INTO `x` VALUES (9)'),(3,"dq \" ),( ""x"""),(4,'\\'),(5,'-- not a comment'),(6,'/* nor this */'),(7,'# nor this'),(8,_binary 'x');
INSERT INTO `Odd``N` (`a`,`b`) VALUES (9,'x'),(10,'y');
"#;
        assert_eq!(counts(dump), v(&[("Odd`N", 10)]));
    }

    #[test]
    fn comments_routines_and_delimiters_do_not_count() {
        let dump = "/*!50003 CREATE*/ /*!50003 TRIGGER tr BEFORE INSERT ON e FOR EACH ROW INSERT INTO `log` VALUES (1) */;\n\
            # INSERT INTO `t` VALUES (1);\n\
            -- INSERT INTO `t` VALUES (1);\n\
            SELECT 1--1;\n\
            DELIMITER ;;\n\
            CREATE PROCEDURE `p`() BEGIN INSERT INTO `t` VALUES (1); INSERT INTO `t` VALUES (2),(3); END ;;\n\
            DELIMITER ;\n\
            INSERT INTO `t` VALUES (4),(5);\n\
            INSERT INTO `t` VALUES (-1.5e3,0x00,NULL,'(');\n";
        assert_eq!(counts(dump), v(&[("t", 3)]));
    }

    #[test]
    fn non_ascii_names_and_unterminated_input() {
        let dump = "INSERT INTO `données` VALUES ('é'),('ü');\nINSERT INTO `t` VALUES (1),(2";
        assert_eq!(counts(dump), v(&[("données", 2), ("t", 2)]));
    }
}
