//! A small HTTP/1.1 client for webhooks and pings: one request, the
//! status line read back, `Connection: close`.

use std::io::{Read, Write};

use backup_core::jobs::notify::HttpRequest;
use backup_core::registry::redact;
use backup_core::{Error, Result};

use super::{Conn, Deadline, backend};

/// `http(s)://host[:port]/path?query`, split.
struct Url<'u> {
    tls: bool,
    host: &'u str,
    port: u16,
    target: &'u str,
}

fn parse(url: &str) -> Result<Url<'_>> {
    let bad = |why: &str| Error::InvalidInput(format!("{}: {why}", redact(url)));
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad("expected an http:// or https:// URL"));
    };
    let (authority, target) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err(bad(
            "credentials in the URL are not supported: use a header",
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            (h, p.parse().map_err(|_| bad("the port is not a number"))?)
        }
        _ => (authority, if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok(Url {
        tls,
        host: host.trim_matches(['[', ']']),
        port,
        target: if target.starts_with('?') { "/" } else { target },
    })
}

pub(super) fn send(r: &HttpRequest) -> Result<u16> {
    exchange(r, None).map(|(status, _)| status)
}

/// Sends the request and reads the body of a 2xx answer (at most `limit`
/// bytes): `Content-Length`, chunked, or up to the close.
pub(super) fn get(r: &HttpRequest, limit: usize) -> Result<Vec<u8>> {
    exchange(r, Some(limit)).map(|(_, body)| body)
}

fn exchange(r: &HttpRequest, body_limit: Option<usize>) -> Result<(u16, Vec<u8>)> {
    let url = parse(&r.url)?;
    let fail = |m: String| backend("http", url.host, m);
    let socket = Deadline::connect(url.host, url.port, r.timeout)
        .map_err(|e| fail(format!("cannot connect to port {}: {e}", url.port)))?;
    let mut conn = Conn::Plain(socket);
    if url.tls {
        conn = conn
            .tls(url.host, r.ca_file.as_deref())
            .map_err(|e| fail(e.to_string()))?;
    }
    // A query string (`?rid=...`) goes with the path.
    let target = if r.url.contains('?') && !url.target.contains('?') {
        format!(
            "{}?{}",
            url.target,
            r.url.split_once('?').map_or("", |(_, q)| q)
        )
    } else {
        url.target.to_owned()
    };
    let mut head = format!(
        "{} {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: backupkit/{}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        r.method,
        if (url.port == 443 && url.tls) || (url.port == 80 && !url.tls) {
            url.host.to_owned()
        } else {
            format!("{}:{}", url.host, url.port)
        },
        env!("CARGO_PKG_VERSION"),
        r.body.len()
    );
    if let Some(t) = r.content_type {
        head.push_str("Content-Type: ");
        head.push_str(t);
        head.push_str("\r\n");
    }
    for (k, v) in &r.headers {
        if k.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
            return Err(Error::InvalidInput(format!(
                "header {k:?} holds a line break"
            )));
        }
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())
        .and_then(|()| conn.write_all(&r.body))
        .and_then(|()| conn.flush())
        .map_err(|e| fail(format!("cannot send the request: {e}")))?;
    let status = status_line(&mut conn).map_err(fail)?;
    if !(200..300).contains(&status) {
        return Err(fail(format!("the server answered HTTP {status}")));
    }
    let Some(limit) = body_limit else {
        return Ok((status, Vec::new()));
    };
    let body = read_body(&mut conn, limit).map_err(fail)?;
    Ok((status, body))
}

/// One header or chunk-size line, without its line break.
fn line(conn: &mut Conn) -> std::result::Result<String, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match conn.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => return Err(format!("the answer broke off: {e}")),
        }
        if line.len() > 16 * 1024 {
            return Err("a header line longer than 16 KiB".into());
        }
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_owned())
}

/// The headers, then the body as they describe it.
fn read_body(conn: &mut Conn, limit: usize) -> std::result::Result<Vec<u8>, String> {
    let mut length = None;
    let mut chunked = false;
    loop {
        let h = line(conn)?;
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = Some(v.parse::<usize>().map_err(|_| "a bad Content-Length")?);
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.to_ascii_lowercase().contains("chunked");
            }
        }
    }
    let too_long = || format!("the answer is longer than {limit} bytes");
    let mut body = Vec::new();
    let take = |conn: &mut Conn, n: usize, body: &mut Vec<u8>| {
        if body.len() + n > limit {
            return Err(too_long());
        }
        let start = body.len();
        body.resize(start + n, 0);
        conn.read_exact(&mut body[start..])
            .map_err(|e| format!("the answer broke off: {e}"))
    };
    if chunked {
        loop {
            let size = line(conn)?;
            let size = size.split(';').next().unwrap_or("").trim();
            let n = usize::from_str_radix(size, 16).map_err(|_| "a bad chunk size")?;
            if n == 0 {
                break;
            }
            take(conn, n, &mut body)?;
            line(conn)?;
        }
    } else if let Some(n) = length {
        take(conn, n, &mut body)?;
    } else {
        let mut buf = [0u8; 8192];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) if body.len() + n > limit => return Err(too_long()),
                Ok(n) => body.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("the answer broke off: {e}")),
            }
        }
    }
    Ok(body)
}

/// Reads `HTTP/1.x NNN ...` and returns NNN.
fn status_line(conn: &mut Conn) -> std::result::Result<u16, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 1024 {
        match conn.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => return Err(format!("no answer: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&line);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().and_then(|c| c.parse().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(format!("not an HTTP answer: {:?}", line.trim_end())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split() {
        let u = parse("https://hc-ping.com/abc/start").unwrap();
        assert!(u.tls && u.host == "hc-ping.com" && u.port == 443 && u.target == "/abc/start");
        let u = parse("http://127.0.0.1:8080").unwrap();
        assert!(!u.tls && u.host == "127.0.0.1" && u.port == 8080 && u.target == "/");
        let u = parse("http://[::1]:9/x?y=1").unwrap();
        assert!(u.host == "::1" && u.port == 9 && u.target == "/x?y=1");
        assert!(parse("ftp://x").is_err());
        assert!(parse("https://user:pw@x/").is_err());
    }
}
