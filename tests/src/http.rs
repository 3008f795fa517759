//! A plain HTTP/1.1 client for the servers the tests run: std only, one connection a request.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// `GET /` on 127.0.0.1:`port` with `Connection: close`: the body of a `200 OK` answer.
pub fn get(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200 OK") => Ok(body.to_owned()),
        _ => Err(std::io::Error::other(format!("bad answer {response:?}"))),
    }
}
