//! A small SMTP client (RFC 5321): EHLO, STARTTLS, AUTH PLAIN or LOGIN,
//! one message with its headers, QUIT.

use std::io::{Read, Write};

use backup_core::jobs::notify::{Mail, Security, SmtpServer};

use super::{Conn, Deadline, base64};

type R<T> = std::result::Result<T, String>;

struct Session {
    conn: Option<Conn>,
}

impl Session {
    fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("a connection")
    }

    /// Reads one reply (all its lines); returns its code and last text.
    fn reply(&mut self) -> R<(u16, Vec<String>)> {
        let mut lines = Vec::new();
        loop {
            let line = self.line()?;
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("not an SMTP reply: {line:?}"))?;
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_owned());
            if !more {
                return Ok((code, lines));
            }
        }
    }

    fn line(&mut self) -> R<String> {
        let mut out = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            let n = self.conn().read(&mut byte).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            if byte[0] == b'\n' {
                break;
            }
            if out.len() > 4096 {
                return Err("an SMTP reply line longer than 4 KiB".into());
            }
            out.push(byte[0]);
        }
        if out.last() == Some(&b'\r') {
            out.pop();
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn send(&mut self, line: &str) -> R<()> {
        let conn = self.conn();
        conn.write_all(line.as_bytes())
            .and_then(|()| conn.write_all(b"\r\n"))
            .and_then(|()| conn.flush())
            .map_err(|e| e.to_string())
    }

    /// Sends a command and expects one of `ok`; `what` names it in errors
    /// (never the command itself, which may hold credentials).
    fn command(&mut self, line: &str, ok: &[u16], what: &str) -> R<Vec<String>> {
        self.send(line)?;
        let (code, text) = self.reply()?;
        if ok.contains(&code) {
            Ok(text)
        } else {
            Err(format!("{what} refused: {code} {}", text.join(" ")))
        }
    }
}

pub(super) fn send(server: &SmtpServer, mail: &Mail) -> R<()> {
    let socket = Deadline::connect(&server.host, server.port, server.timeout)
        .map_err(|e| format!("cannot connect to port {}: {e}", server.port))?;
    let mut conn = Conn::Plain(socket);
    if server.security == Security::Tls {
        conn = conn
            .tls(&server.host, server.ca_file.as_deref())
            .map_err(|e| e.to_string())?;
    }
    let mut s = Session { conn: Some(conn) };
    let (code, text) = s.reply()?;
    if code != 220 {
        return Err(format!("greeting {code} {}", text.join(" ")));
    }
    let me = gethostname();
    let mut ext = s.command(&format!("EHLO {me}"), &[250], "EHLO")?;
    if server.security == Security::StartTls {
        if !has(&ext, "STARTTLS") {
            return Err(
                "the server does not offer STARTTLS (set `smtp_security: tls` for port 465, or \
                 `plain` for a local relay)"
                    .into(),
            );
        }
        s.command("STARTTLS", &[220], "STARTTLS")?;
        let plain = s.conn.take().expect("a connection");
        s.conn = Some(
            plain
                .tls(&server.host, server.ca_file.as_deref())
                .map_err(|e| e.to_string())?,
        );
        ext = s.command(&format!("EHLO {me}"), &[250], "EHLO")?;
    }
    if let Some(user) = &server.user {
        let password = server.password.as_deref().unwrap_or("");
        login(&mut s, &ext, user, password)?;
    }
    s.command(
        &format!("MAIL FROM:<{}>", address(&mail.from)?),
        &[250],
        "MAIL FROM",
    )?;
    for to in &mail.to {
        s.command(
            &format!("RCPT TO:<{}>", address(to)?),
            &[250, 251],
            "RCPT TO",
        )?;
    }
    s.command("DATA", &[354], "DATA")?;
    let message = message(mail, &me);
    {
        let conn = s.conn();
        conn.write_all(message.as_bytes())
            .and_then(|()| conn.write_all(b".\r\n"))
            .and_then(|()| conn.flush())
            .map_err(|e| e.to_string())?;
    }
    let (code, text) = s.reply()?;
    if code != 250 {
        return Err(format!(
            "the message was refused: {code} {}",
            text.join(" ")
        ));
    }
    let _ = s.send("QUIT");
    Ok(())
}

fn login(s: &mut Session, ext: &[String], user: &str, password: &str) -> R<()> {
    let auth = ext
        .iter()
        .find(|l| l.to_ascii_uppercase().starts_with("AUTH"))
        .map(|l| l.to_ascii_uppercase())
        .ok_or("the server offers no AUTH (remove smtp_user, or use its TLS port)")?;
    if auth.split_whitespace().any(|m| m == "PLAIN") {
        let token = base64(format!("\0{user}\0{password}").as_bytes());
        s.command(&format!("AUTH PLAIN {token}"), &[235], "login (AUTH PLAIN)")?;
    } else if auth.split_whitespace().any(|m| m == "LOGIN") {
        s.command("AUTH LOGIN", &[334], "AUTH LOGIN")?;
        s.command(&base64(user.as_bytes()), &[334], "login (user)")?;
        s.command(&base64(password.as_bytes()), &[235], "login")?;
    } else {
        return Err(format!("no login method backupkit knows ({auth})"));
    }
    Ok(())
}

fn has(ext: &[String], word: &str) -> bool {
    ext.iter().any(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case(word))
    })
}

/// The address inside `Name <addr>`, or the address; no line breaks or
/// angle brackets that could inject commands.
fn address(given: &str) -> R<String> {
    let addr = match (given.rfind('<'), given.rfind('>')) {
        (Some(a), Some(b)) if a < b => &given[a + 1..b],
        _ => given,
    };
    let addr = addr.trim();
    if addr.is_empty() || addr.chars().any(|c| c.is_control() || "<> ".contains(c)) {
        return Err(format!("not a mail address: {given:?}"));
    }
    Ok(addr.to_owned())
}

/// Headers and body, CRLF line ends, dot-stuffed.
fn message(mail: &Mail, me: &str) -> String {
    let date = chrono::Utc::now().to_rfc2822();
    let id = format!(
        "<{}.{}@{me}>",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        std::process::id()
    );
    let ascii = mail.body.is_ascii();
    let mut out = format!(
        "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {date}\r\nMessage-ID: {id}\r\nMIME-Version: \
         1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {}\r\n\
         X-Mailer: backupkit\r\n\r\n",
        header(&mail.from),
        mail.to
            .iter()
            .map(|t| header(t))
            .collect::<Vec<_>>()
            .join(", "),
        header(&mail.subject),
        if ascii { "7bit" } else { "base64" }
    );
    if ascii {
        for line in mail.body.lines() {
            if line.starts_with('.') {
                out.push('.');
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
    } else {
        let encoded = base64(mail.body.as_bytes());
        for chunk in encoded.as_bytes().chunks(76) {
            out.push_str(std::str::from_utf8(chunk).unwrap_or(""));
            out.push_str("\r\n");
        }
    }
    out
}

/// A header value: line breaks removed, non-ASCII as RFC 2047 words.
fn header(value: &str) -> String {
    let flat = value.replace(['\r', '\n'], " ");
    if flat.is_ascii() {
        flat
    } else {
        format!("=?utf-8?b?{}?=", base64(flat.as_bytes()))
    }
}

/// This machine's name for EHLO, or `localhost` when it is not a plain
/// host name.
fn gethostname() -> String {
    let name = backup_core::lock::this_host();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
    {
        "localhost".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_headers_cannot_inject() {
        assert_eq!(address("Ops <ops@example.com>").unwrap(), "ops@example.com");
        assert_eq!(address("admin@example.com").unwrap(), "admin@example.com");
        assert!(address("a@b.c>\r\nRCPT TO:<x@y").is_err());
        assert_eq!(header("a\r\nBcc: x"), "a  Bcc: x");
        assert_eq!(header("é"), "=?utf-8?b?w6k=?=");
        let m = Mail {
            from: "b@example.com".into(),
            to: vec!["a@example.com".into()],
            subject: "s".into(),
            body: "one\n.two\n".into(),
        };
        assert!(message(&m, "h").ends_with("\r\n\r\none\r\n..two\r\n"));
    }
}
