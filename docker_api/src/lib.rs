//! Minimal async client of the Docker Engine REST API over its Unix socket.
