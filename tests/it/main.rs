//! Integration tests, compiled into one binary (faster to link, one place to look).
//!
//! They use the real services that `scripts/test.sh` starts and describes in environment
//! variables: Swift (`SWIFT_AIO_*`), python-swiftclient (`IRONBOOT_TEST_PYTHON`),
//! PostgreSQL (`IRONBOOT_TEST_PG_URL`), and Keystone with a Glance whose store is Swift
//! (`IRONBOOT_TEST_KEYSTONE_*`, `IRONBOOT_TEST_GLANCE_*`: see `support/glance_env.rs`). A test whose service is missing fails with a message
//! saying so; nothing is skipped silently.

mod support;

mod api;
mod cache_cli;
mod cache_crash;
mod cache_full;
mod cache_mode;
mod cli;
mod conductor;
mod glance;
mod glance_services;
mod hardening;
mod hostile;
mod membership;
mod multi;
mod script_fuzz;
mod serving;
mod store;
mod swift_boot;
mod swift_keys;
mod swift_tempurl;
mod swiftclient_equality;
mod tls;
