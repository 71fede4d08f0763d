//! ironboot decides what each bare-metal machine boots over the network and where the bytes
//! come from. A machine's iPXE firmware asks ironboot for a script; the script names a kernel
//! and a ramdisk, either as Swift temporary URLs signed at that moment (`[ipxe] use_swift =
//! true`) or as files ironboot caches and serves itself. It implements OpenStack Ironic's
//! spec "iPXE to use Swift Temporary URLs" as a standalone service, with Ironic's option
//! names and file layout.
//!
//! # Layout
//!
//! The pure core does no I/O and is tested exhaustively; I/O lives at the edges.
//!
//! | module | role |
//! |---|---|
//! | [`config`] | `ironboot.conf`: raw INI (phase 1) → typed, validated [`config::Settings`] (phase 2); `config sample`/`check`; the [`config::Secret`] type. Pure apart from reading the files it names. |
//! | [`tempurl`] | Swift TempURL signing in every form Swift 2.38 accepts, byte-identical to python-swiftclient; Ironic's Glance-image URL rule. Pure: no I/O, no clock. |
//! | [`cli`] | clap commands; each command is a function the thin binary calls. |
//!
//! `docs/architecture.md` has the whole map, including the modules still to come, and the
//! invariants each module keeps.
#![forbid(unsafe_code)]

pub mod boot;
pub mod cli;
pub mod conductor;
pub mod config;
pub mod images;
pub mod ipxe;
pub mod metrics;
pub mod mirror;
pub mod node;
pub mod server;
pub mod store;
pub mod tempurl;
