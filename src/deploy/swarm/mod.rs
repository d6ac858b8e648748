//! `platform: swarm`: a colour is a Swarm service (`services.rs`), the
//! journal and the lock are Swarm configs (`configs.rs`). Nginx, Redis and
//! the checker are containers on the manager's engine, attached to the
//! stack's attachable overlay, as on one engine; so the edge, its reloads
//! and the switch are the same code as there (`nginx.rs`), with the
//! upstream naming the colour's task addresses. When Swarm moves tasks by
//! itself, the checker beside Nginx rewrites the upstream (`follow.rs`).
//! `swarm.edges` adds an Nginx and a follower on other manager nodes,
//! switched together with the manager's (`edges.rs`).

pub mod configs;
pub mod edges;
pub mod follow;
pub mod services;
