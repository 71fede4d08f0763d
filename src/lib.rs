//! ironboot decides what each bare-metal machine boots over the network and where the bytes
//! come from. A machine's iPXE firmware asks ironboot for a script; the script names a kernel
//! and a ramdisk, either as Swift temporary URLs signed at that moment (`[ipxe] use_swift =
//! true`) or as files ironboot caches and serves itself. It implements OpenStack Ironic's
//! spec "iPXE to use Swift Temporary URLs" as a standalone service, with Ironic's option
//! names and file layout.
//!
//! # Layout
//!
//! A pure core does no I/O and is tested exhaustively; I/O lives at the edges.
//!
//! | module | role |
//! |---|---|
//! | [`config`] | `ironboot.conf`: raw INI (phase 1) → typed, validated [`config::Settings`] (phase 2); `config sample`/`check`; the [`config::Secret`] type. Pure apart from reading the files it names. |
//! | [`tempurl`] | Swift TempURL signing in every form Swift 2.38 accepts, byte-identical to python-swiftclient; Ironic's Glance-image URL rule. Pure: no I/O, no clock. |
//! | [`node`] | Nodes, MACs, boot modes, targets, states and the prepared-boot snapshot. Pure. |
//! | [`ring`] | The consistent hash ring: which conductor owns a node (rendezvous hashing over SHA-256, stable across versions). Pure. |
//! | [`ipxe`] | The master and per-node iPXE templates, URL safety checks, retry jitter. Pure. |
//! | [`images`] | Image references and the conductor's Swift HEAD check. |
//! | [`cache`] | The master image cache: downloads verified in one pass, single flight within and across processes, revalidation, hardlinks into `http_root`, eviction by TTL and size. |
//! | [`boot`] | `prepare` (validate and check a node's images) and `render` (its script, TempURLs signed now). No HTTP, no SQL. |
//! | [`store`] | Nodes in SQLite or PostgreSQL (sqlx, one set of migrations). No business rules. |
//! | [`mirror`] | Ironic's `http_root` layout on disk, written atomically. |
//! | [`conductor`] | Periodic tasks: keeping the mirror's TempURLs fresh. |
//! | [`metrics`] | Prometheus metrics. |
//! | [`server`] | The API and boot listeners (axum); errors → status + stable code. |
//! | [`cli`] | clap commands; each command is a function the thin binary calls. |
//!
//! `docs/architecture.md` has the whole map and the invariants each module keeps.
#![forbid(unsafe_code)]

pub mod boot;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod code;
pub mod conductor;
pub mod config;
pub mod images;
pub mod ipxe;
pub mod layers;
pub mod metrics;
pub mod mirror;
pub mod node;
pub mod ring;
pub mod script;
pub mod server;
pub mod service;
pub mod store;
pub mod tempurl;
