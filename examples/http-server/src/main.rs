//! An axum server: `GET /` answers with `greet`'s text and the number of requests served so
//! far. Run it under `hotpatch run`, send requests, and edit `greet` while it serves: the next
//! answers use the new text, and the count goes on.

use axum::{extract::State, routing::get, Router};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;

/// The route's handler. Edit the text while the server runs.
async fn greet(State(served): State<Arc<AtomicU64>>) -> String {
    let request = served.fetch_add(1, Ordering::Relaxed) + 1;
    format!("hello v1 request={request}\n")
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(port) => port.parse().expect("the port is a number"),
        None => 3000,
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening port={port}");
    let served = Arc::new(AtomicU64::new(0));
    let app = Router::new().route("/", get(greet)).with_state(served);
    axum::serve(listener, app).await
}
