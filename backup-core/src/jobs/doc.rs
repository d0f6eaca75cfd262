//! A config document as a tree of values that remember where they were
//! written, read from YAML or TOML, so that every problem the validator
//! finds can name the file, line and column, and the key path.
//!
//! Both formats come out as the same [`Node`] tree: mappings keep their
//! keys in file order (a repeated key is a problem), plain YAML scalars
//! are typed by the YAML 1.2 core schema (`true`, `7`, `2.5`, `null`, `~`),
//! quoted ones stay strings, and TOML values keep their TOML types.
//! Anchors and aliases are refused: a config should say everything once,
//! where it can be read.

use std::fmt;

/// Where something is in its file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// A value with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub at: Pos,
}

/// A mapping key with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub at: Pos,
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Map(Vec<(Key, Node)>),
    List(Vec<Node>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
}

impl Value {
    /// What the value is, for messages ("a mapping", "a number").
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Map(_) => "a mapping",
            Value::List(_) => "a list",
            Value::Str(_) => "a string",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::Bool(_) => "true or false",
            Value::Null => "nothing (null)",
        }
    }
}

/// The two formats, chosen by the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Toml,
}

impl Format {
    /// `.yaml`/`.yml` or `.toml`; `None` for anything else.
    pub fn of(path: &std::path::Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "yaml" | "yml" => Some(Self::Yaml),
            "toml" => Some(Self::Toml),
            _ => None,
        }
    }
}

/// One thing wrong with a config, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub at: Pos,
    /// The key path (`jobs.nightly.destinations.nas.location`), empty for
    /// the document itself.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.at.line, self.at.col)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Parses `text` (from `file`, named in problems).
///
/// # Errors
///
/// The first syntax error, or every repeated key and alias.
pub fn parse(file: &str, text: &str, format: Format) -> Result<Node, Vec<Problem>> {
    match format {
        Format::Yaml => yaml::parse(file, text),
        Format::Toml => toml::parse(file, text),
    }
}

/// Problems for keys given twice in one mapping.
fn repeated_keys(file: &str, path: &str, entries: &[(Key, Node)], out: &mut Vec<Problem>) {
    for (i, (k, _)) in entries.iter().enumerate() {
        if let Some((first, _)) = entries[..i].iter().find(|(e, _)| e.name == k.name) {
            out.push(Problem {
                file: file.to_owned(),
                at: k.at,
                key: join(path, &k.name),
                message: format!("given twice (first on line {}); keep one", first.at.line),
            });
        }
    }
}

/// `parent.key`, or `key` at the top.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

mod yaml {
    use saphyr_parser::{Event, Parser, ScalarStyle};

    use super::{Key, Node, Pos, Problem, Value, join, repeated_keys};

    pub(super) fn parse(file: &str, text: &str) -> Result<Node, Vec<Problem>> {
        let mut events = Vec::new();
        for e in Parser::new_from_str(text) {
            match e {
                Ok((ev, span)) => events.push((
                    ev,
                    Pos {
                        line: span.start.line(),
                        col: span.start.col() + 1,
                    },
                )),
                Err(e) => {
                    return Err(vec![Problem {
                        file: file.to_owned(),
                        at: Pos {
                            line: e.marker().line(),
                            col: e.marker().col() + 1,
                        },
                        key: String::new(),
                        message: format!("not valid YAML: {}", e.info()),
                    }]);
                }
            }
        }
        let mut problems = Vec::new();
        let mut it = events.into_iter().peekable();
        let mut root = None;
        while let Some((ev, at)) = it.next() {
            match ev {
                Event::StreamStart | Event::DocumentStart(_) | Event::DocumentEnd => {}
                Event::StreamEnd => break,
                ev => {
                    if root.is_some() {
                        problems.push(Problem {
                            file: file.to_owned(),
                            at,
                            key: String::new(),
                            message: "a second YAML document: a config is one document".into(),
                        });
                        break;
                    }
                    root = Some(node(file, "", ev, at, &mut it, &mut problems));
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(root.unwrap_or(Node {
            value: Value::Map(Vec::new()),
            at: Pos { line: 1, col: 1 },
        }))
    }

    fn node<'a>(
        file: &str,
        path: &str,
        ev: Event<'a>,
        at: Pos,
        it: &mut impl Iterator<Item = (Event<'a>, Pos)>,
        problems: &mut Vec<Problem>,
    ) -> Node {
        let value = match ev {
            Event::Scalar(text, style, _, _) => scalar(&text, style),
            Event::SequenceStart(..) => {
                let mut items = Vec::new();
                while let Some((ev, at)) = it.next() {
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    let here = format!("{path}[{}]", items.len());
                    items.push(node(file, &here, ev, at, it, problems));
                }
                Value::List(items)
            }
            Event::MappingStart(..) => {
                let mut entries: Vec<(Key, Node)> = Vec::new();
                while let Some((ev, kat)) = it.next() {
                    if matches!(ev, Event::MappingEnd) {
                        break;
                    }
                    let name = if let Event::Scalar(t, ..) = &ev {
                        t.to_string()
                    } else {
                        problems.push(Problem {
                            file: file.to_owned(),
                            at: kat,
                            key: path.to_owned(),
                            message: "a key must be a plain name".into(),
                        });
                        String::new()
                    };
                    let here = join(path, &name);
                    let Some((vev, vat)) = it.next() else { break };
                    let value = node(file, &here, vev, vat, it, problems);
                    entries.push((Key { name, at: kat }, value));
                }
                repeated_keys(file, path, &entries, problems);
                Value::Map(entries)
            }
            Event::Alias(_) => {
                problems.push(Problem {
                    file: file.to_owned(),
                    at,
                    key: path.to_owned(),
                    message: "YAML aliases (*name) are not supported: write the value out".into(),
                });
                Value::Null
            }
            _ => Value::Null,
        };
        Node { value, at }
    }

    /// A plain scalar typed by the YAML 1.2 core schema; a quoted one is a
    /// string.
    fn scalar(text: &str, style: ScalarStyle) -> Value {
        if style != ScalarStyle::Plain {
            return Value::Str(text.to_owned());
        }
        match text {
            "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
            "true" | "True" | "TRUE" => return Value::Bool(true),
            "false" | "False" | "FALSE" => return Value::Bool(false),
            _ => {}
        }
        let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
        if !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && let Ok(i) = text.parse::<i64>()
        {
            return Value::Int(i);
        }
        if digits.bytes().any(|b| b.is_ascii_digit())
            && digits.bytes().all(|b| {
                b.is_ascii_digit() || b == b'.' || b == b'e' || b == b'E' || b == b'-' || b == b'+'
            })
            && let Ok(f) = text.parse::<f64>()
        {
            return Value::Float(f);
        }
        Value::Str(text.to_owned())
    }
}

mod toml {
    use toml_edit::{ImDocument, Item, Table};

    use super::{Key, Node, Pos, Problem, Value};

    /// Byte offsets to lines and columns.
    struct Lines(Vec<usize>);

    impl Lines {
        fn new(text: &str) -> Self {
            Self(
                std::iter::once(0)
                    .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                    .collect(),
            )
        }

        fn pos(&self, text: &str, offset: Option<usize>) -> Pos {
            let Some(offset) = offset else {
                return Pos { line: 1, col: 1 };
            };
            let line = self.0.partition_point(|&s| s <= offset).max(1);
            let start = self.0[line - 1];
            let col = text.get(start..offset).map_or(1, |s| s.chars().count() + 1);
            Pos { line, col }
        }
    }

    pub(super) fn parse(file: &str, text: &str) -> Result<Node, Vec<Problem>> {
        let lines = Lines::new(text);
        let doc = ImDocument::parse(text).map_err(|e| {
            let message = e.message().trim().replace('\n', " ");
            vec![Problem {
                file: file.to_owned(),
                at: lines.pos(text, e.span().map(|s| s.start)),
                key: String::new(),
                message: format!("not valid TOML: {message}"),
            }]
        })?;
        let conv = Conv {
            text,
            lines: &lines,
        };
        Ok(Node {
            value: conv.table(doc.as_table()),
            at: Pos { line: 1, col: 1 },
        })
    }

    struct Conv<'a> {
        text: &'a str,
        lines: &'a Lines,
    }

    impl Conv<'_> {
        fn at(&self, span: Option<std::ops::Range<usize>>) -> Pos {
            self.lines.pos(self.text, span.map(|s| s.start))
        }

        fn table(&self, t: &Table) -> Value {
            let mut entries = Vec::new();
            for (name, item) in t {
                let key_at = t
                    .get_key_value(name)
                    .and_then(|(k, _)| k.span())
                    .map_or_else(|| self.at(item.span()), |s| self.at(Some(s)));
                entries.push((
                    Key {
                        name: name.to_owned(),
                        at: key_at,
                    },
                    self.item(item, key_at),
                ));
            }
            Value::Map(entries)
        }

        fn item(&self, item: &Item, fallback: Pos) -> Node {
            let at = item.span().map_or(fallback, |s| self.at(Some(s)));
            let value = match item {
                Item::None => Value::Null,
                Item::Table(t) => self.table(t),
                Item::ArrayOfTables(a) => Value::List(
                    a.iter()
                        .map(|t| Node {
                            value: self.table(t),
                            at: t.span().map_or(at, |s| self.at(Some(s))),
                        })
                        .collect(),
                ),
                Item::Value(v) => return self.value(v, fallback),
            };
            Node { value, at }
        }

        fn value(&self, v: &toml_edit::Value, fallback: Pos) -> Node {
            use toml_edit::Value as V;
            let at = v.span().map_or(fallback, |s| self.at(Some(s)));
            let value = match v {
                V::String(s) => Value::Str(s.value().clone()),
                V::Integer(i) => Value::Int(*i.value()),
                V::Float(f) => Value::Float(*f.value()),
                V::Boolean(b) => Value::Bool(*b.value()),
                V::Datetime(d) => Value::Str(d.value().to_string()),
                V::Array(a) => Value::List(a.iter().map(|x| self.value(x, at)).collect()),
                V::InlineTable(t) => {
                    let mut entries = Vec::new();
                    for (name, x) in t {
                        let key_at = t
                            .key(name)
                            .and_then(toml_edit::Key::span)
                            .map_or(at, |s| self.at(Some(s)));
                        entries.push((
                            Key {
                                name: name.to_owned(),
                                at: key_at,
                            },
                            self.value(x, key_at),
                        ));
                    }
                    Value::Map(entries)
                }
            };
            Node { value, at }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Format, Pos, Value, parse};

    fn map(v: &Value) -> &[(super::Key, super::Node)] {
        match v {
            Value::Map(m) => m,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn yaml_values_keep_their_lines_columns_and_types() {
        let text = "jobs:\n  nightly:\n    keep_daily: 7\n    enabled: true\n    name: '7'\n    rate: 2.5\n    none: ~\n    sources:\n      - /data\n      - \"/two words\"\n";
        let root = parse("c.yaml", text, Format::Yaml).unwrap();
        let jobs = map(&root.value);
        assert_eq!(jobs[0].0.name, "jobs");
        let nightly = map(&map(&jobs[0].1.value)[0].1.value);
        let get = |k: &str| nightly.iter().find(|(n, _)| n.name == k).unwrap();
        assert_eq!(get("keep_daily").1.value, Value::Int(7));
        assert_eq!(get("keep_daily").0.at, Pos { line: 3, col: 5 });
        assert_eq!(get("keep_daily").1.at, Pos { line: 3, col: 17 });
        assert_eq!(get("enabled").1.value, Value::Bool(true));
        assert_eq!(get("name").1.value, Value::Str("7".into()));
        assert_eq!(get("rate").1.value, Value::Float(2.5));
        assert_eq!(get("none").1.value, Value::Null);
        let Value::List(items) = &get("sources").1.value else {
            panic!()
        };
        assert_eq!(items[1].value, Value::Str("/two words".into()));
        assert_eq!(items[1].at, Pos { line: 10, col: 9 });
    }

    #[test]
    fn toml_values_keep_their_lines_columns_and_types() {
        let text = "log_file = \"/var/log/b.log\"\n\n[jobs.nightly]\nkeep_daily = 7\nsources = [\"/data\", \"/more\"]\nopts = { region = \"eu\" }\n\n[[jobs.nightly.hooks]]\nrun = \"make\"\n";
        let root = parse("c.toml", text, Format::Toml).unwrap();
        let top = map(&root.value);
        assert_eq!(top[0].0.at, Pos { line: 1, col: 1 });
        assert_eq!(top[0].1.at, Pos { line: 1, col: 12 });
        let jobs = map(&top[1].1.value);
        let nightly = map(&jobs[0].1.value);
        let get = |k: &str| nightly.iter().find(|(n, _)| n.name == k).unwrap();
        assert_eq!(get("keep_daily").1.value, Value::Int(7));
        assert_eq!(get("keep_daily").0.at, Pos { line: 4, col: 1 });
        assert_eq!(get("keep_daily").1.at, Pos { line: 4, col: 14 });
        let Value::List(srcs) = &get("sources").1.value else {
            panic!()
        };
        assert_eq!(srcs[1].at, Pos { line: 5, col: 21 });
        let opts = map(&get("opts").1.value);
        assert_eq!(
            (opts[0].0.name.as_str(), opts[0].0.at),
            ("region", Pos { line: 6, col: 10 })
        );
        let Value::List(hooks) = &get("hooks").1.value else {
            panic!()
        };
        assert_eq!(map(&hooks[0].value)[0].1.value, Value::Str("make".into()));
    }

    #[test]
    fn syntax_errors_repeated_keys_and_aliases_are_placed() {
        let e = parse("c.yaml", "a: [1, 2\nb: 3\n", Format::Yaml).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].to_string().starts_with("c.yaml:"), "{}", e[0]);
        assert!(e[0].message.contains("not valid YAML"), "{}", e[0]);
        let e = parse("c.yaml", "a: 1\nb: &x 2\na: 3\nc: *x\n", Format::Yaml).unwrap_err();
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "c.yaml:4:4: c: YAML aliases (*name) are not supported: write the value out",
                "c.yaml:3:1: a: given twice (first on line 1); keep one"
            ]
        );
        let e = parse("c.toml", "a = 1\nb = \n", Format::Toml).unwrap_err();
        assert_eq!(e[0].at.line, 2, "{}", e[0]);
        assert!(e[0].message.starts_with("not valid TOML"), "{}", e[0]);
        let e = parse("c.toml", "a = 1\na = 2\n", Format::Toml).unwrap_err();
        assert_eq!(e[0].at.line, 2, "{}", e[0]);
        assert_eq!(
            Format::of(std::path::Path::new("x/backupkit.YML")),
            Some(Format::Yaml)
        );
        assert_eq!(Format::of(std::path::Path::new("backupkit.ini")), None);
    }
}
