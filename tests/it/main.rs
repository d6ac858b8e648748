//! Every integration test in one binary, so CI links once (each file of
//! tests/ used to be a binary of its own: 27 links of the whole dependency
//! tree). A file here is a module; run one with `cargo nextest run -E
//! 'test(/^deploy_hosts::/)'` or `cargo test --test it deploy_hosts::`.

mod common;

mod bench_cli;
mod bench_scripts;
mod ci_recipes;
mod cli_docs;
mod clients;
mod compose;
mod deploy;
mod deploy_canary;
mod deploy_chaos;
mod deploy_external;
mod deploy_faults;
mod deploy_hardening;
mod deploy_hooks;
mod deploy_hosts;
mod deploy_interrupt;
mod deploy_lock;
mod deploy_proxy;
mod deploy_replicas;
mod deploy_tls;
mod docker_build;
mod first_hour;
mod hostile_clients;
mod image_pull;
mod message_ids;
mod monitoring;
mod nginx_reloads;
mod operate;
mod redis_cluster;
mod redis_layer;
mod secrets;
mod serve_contract;
mod serve_process;
mod smoke_cli;
mod swarm_deploy;
mod swarm_harness;
mod websocket_protocol;
mod zero_loss;
