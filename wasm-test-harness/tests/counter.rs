//! Starting the counter service when its port is taken.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;

use wasm_test_harness::{free_port, get, Counter, CounterOptions, EchoServer, ExitedAtStart};

/// A port held the way the race holds it: as the local port of an
/// outgoing connection (here to an echo server), not a listener.
fn held_port() -> (EchoServer, TcpStream, u16) {
    let echo = EchoServer::start().unwrap();
    let stream = TcpStream::connect(("127.0.0.1", echo.port())).unwrap();
    let port = stream.local_addr().unwrap().port();
    (echo, stream, port)
}

#[test]
fn a_chosen_port_taken_before_the_service_binds_it_is_replaced() {
    let (_echo, _held, busy) = held_port();
    let mut offered = Vec::new();
    let counter = Counter::start_choosing(CounterOptions::default(), || {
        let port = if offered.is_empty() {
            busy
        } else {
            free_port()
        };
        offered.push(port);
        port
    })
    .unwrap();
    assert_eq!(offered.len(), 2, "{offered:?}");
    assert_ne!(counter.port(), busy);
    assert_eq!(get(&counter.url("/healthz"), &[]).unwrap().status, 200);
}

#[test]
fn a_port_the_caller_gave_is_never_replaced() {
    let (_echo, _held, busy) = held_port();
    let err = Counter::start(CounterOptions {
        port: busy,
        ..Default::default()
    })
    .err()
    .expect("the port is taken");
    let exited = err
        .downcast_ref::<ExitedAtStart>()
        .expect("it exited at start");
    assert_eq!(exited.port, busy);
}
