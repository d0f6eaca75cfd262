//! Deterministic pseudo-random inputs for the property tests of every
//! parser (locations, URLs, options, durations) across the workspace: no
//! dependency, the same cases on every run. Not part of the API.
#[derive(Debug)]
pub struct Gen(u64);

/// Pieces that parsers of URLs and options trip on.
pub const PIECES: &[&str] = &[
    "",
    "",
    ":",
    "::",
    "/",
    "//",
    "///",
    "@",
    "@@",
    "[",
    "]",
    "[::1]",
    "[::1",
    "%",
    "%2",
    "%zz",
    "%41",
    "%00",
    "?",
    "#",
    " ",
    "\t",
    "\n",
    "\r\n",
    "=",
    "==",
    "&",
    ";",
    ",",
    "\\",
    "\"",
    "'",
    "a",
    "Z",
    "0",
    "9",
    "65535",
    "65536",
    "99999999999999999999",
    "-1",
    "-",
    "_",
    ".",
    "..",
    "~",
    "+",
    "*",
    "é",
    "ü",
    "ß",
    "日本",
    "😀",
    "\u{0}",
    "\u{7f}",
    "\u{85}",
    "\u{202e}",
    "\u{feff}",
    "\u{fffd}",
    "s3://",
    "az://",
    "azure://",
    "gs://",
    "sftp://",
    "ssh://",
    "rclone:",
    "file://",
    "http://",
    "https://",
    "HTTP://",
    "http:",
    "127.0.0.1",
    "1.2.3.999",
    "0x7f",
    "localhost",
    "xn--",
    "xn--zz",
    "user",
    "pw",
    ":9000",
    ":22",
    "bucket",
    "prefix",
    "remote",
    "~/",
    "30s",
    "2m",
    "500ms",
    "true",
    "maybe",
    "key",
    "value",
    "endpoint",
    "region",
    "retries",
];

impl Gen {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }

    /// One character: ASCII (controls included) half the time, else
    /// any Unicode scalar value.
    pub fn char(&mut self) -> char {
        if self.below(2) == 0 {
            char::from(self.below(128) as u8)
        } else {
            loop {
                if let Some(c) = char::from_u32((self.next_u64() % 0x11_0000) as u32) {
                    return c;
                }
            }
        }
    }

    /// Up to `max` pieces, each from [`PIECES`] or one random character.
    pub fn string(&mut self, max: usize) -> String {
        self.string_of(max, PIECES)
    }

    /// Up to `max` pieces, each from `pieces` or one random character.
    pub fn string_of(&mut self, max: usize, pieces: &[&str]) -> String {
        let mut s = String::new();
        for _ in 0..self.below(max + 1) {
            if self.below(3) == 0 {
                s.push(self.char());
            } else {
                s.push_str(self.pick(pieces));
            }
        }
        s
    }

    /// A piece from `good` most of the time, else a random string.
    pub fn part(&mut self, good: &[&str]) -> String {
        if self.below(3) == 0 {
            self.string(4)
        } else {
            self.pick(good).to_owned()
        }
    }
}
