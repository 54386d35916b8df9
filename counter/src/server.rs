//! Running the service: bind, announce `listening on http://ADDR` as the first
//! stdout line, serve until SIGTERM or SIGINT, then drain and return.

use tokio::net::TcpListener;

use crate::api::app;
use crate::config::{Args, StartError};

/// Serves until a termination signal; Ok after a graceful stop.
pub async fn run(args: &Args) -> Result<(), StartError> {
    let state = args.state()?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| StartError::Listen(args.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Listen(args.listen, e))?;
    println!("listening on http://{addr}");
    eprintln!("sluice-counter: store {}", state.store.describe());
    axum::serve(listener, app(state))
        .with_graceful_shutdown(terminated())
        .await
        .map_err(StartError::Serve)
}

/// Resolves on SIGTERM or SIGINT.
async fn terminated() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
