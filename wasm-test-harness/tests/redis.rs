//! Redis lifecycle: start, PING, kill, restart on the same port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use wasm_test_harness::Redis;

#[test]
fn start_kill_restart() {
    let mut redis = Redis::start().unwrap();
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert!(redis.ping());
    redis.kill();
    assert!(!redis.ping());
    redis.restart().unwrap();
    assert_eq!(redis.port(), port);
    assert!(redis.ping());
    drop(redis);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
