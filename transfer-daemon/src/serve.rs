//! `clusster serve`: opens the store, binds every listener, serves until SIGINT or
//! SIGTERM, then drains and flushes.

use crate::admin::{self, AdminState};
use crate::config::{LISTEN_FILE, Settings};
use anyhow::Context;
use federation::FederationEndpoint;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use store::Store;
use tokio::sync::watch;
use transfer_engine::manager::Transfers;

/// Runs the daemon to completion.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    // Installed first: a signal that arrives once we report ready must stop us cleanly.
    let signals = shutdown_signals()?;
    crate::permissions::create_private_dir(&settings.data_dir)
        .with_context(|| format!("cannot create data dir {}", settings.data_dir.display()))?;
    crate::permissions::refuse_exposed_secrets(&settings)?;
    let offload = crate::offload::build(&settings.offload)?;
    let store = Store::open(settings.store.clone(), offload)
        .await
        .with_context(|| format!("cannot open the store in {}", settings.data_dir.display()))?;

    // Bind everything before reporting ready, so /health means "every listener is up".
    let admin_listener = tokio::net::TcpListener::bind(settings.admin_listen)
        .await
        .with_context(|| format!("cannot bind the admin listener on {}", settings.admin_listen))?;
    let s3_listener = tokio::net::TcpListener::bind(settings.s3_listen)
        .await
        .with_context(|| format!("cannot bind the S3 listener on {}", settings.s3_listen))?;
    let s3_tls = match &settings.s3_tls {
        Some((cert, key)) => Some(s3_gateway::server::load_tls(cert, key)?),
        None => None,
    };
    let admin_tls = match &settings.admin_tls {
        Some((addr, cert, key)) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot bind the admin TLS listener on {addr}"))?;
            Some((listener, s3_gateway::server::load_tls(cert, key)?))
        }
        None => None,
    };
    let s3_service = s3_gateway::service(store.clone(), settings.s3.clone())?;
    let transfers = match &settings.federation {
        Some(federation) => {
            let net = FederationEndpoint::bind(
                &settings.site_name,
                federation,
                &settings.transfer,
                &[transfer_proto::wire::ALPN, catalog::quic::ALPN],
            )
            .with_context(|| format!("cannot start the QUIC listener on {}", federation.quic_listen))?;
            Some(Transfers::new(
                store.clone(),
                net,
                settings.transfer.streams_per_transfer as usize,
                settings.transfer.max_active_transfers as usize,
            ))
        }
        None => None,
    };
    let scheme = if s3_tls.is_some() { "https" } else { "http" };
    let mut listeners = serde_json::json!({
        "site": settings.site_name,
        "admin": admin_listener.local_addr()?.to_string(),
        "s3": format!("{scheme}://{}", s3_listener.local_addr()?),
    });
    if let Some(t) = &transfers {
        listeners["quic"] = t.local_addr()?.to_string().into();
    }
    if let Some((listener, _)) = &admin_tls {
        listeners["admin_tls"] = format!("https://{}", listener.local_addr()?).into();
    }
    // The catalog signs with the site's federation key, or, for a site not federated, with
    // one of its own in the data dir (whose log a federation would not take: see
    // `SigningKey::load_or_create`).
    let signing_key_path = match &settings.federation {
        Some(membership) => membership.tls_dir.join(federation::identity::SIGNING_KEY_FILE),
        None => settings.data_dir.join(federation::identity::SIGNING_KEY_FILE),
    };
    let signing_key = federation::signing::SigningKey::load_or_create(&signing_key_path)
        .with_context(|| format!("cannot load the catalog's signing key {}", signing_key_path.display()))?;
    let site_catalog = Arc::new(catalog::Catalog::new(
        catalog::in_store::InStore(store.clone()),
        settings.site_name.clone(),
        signing_key,
    ));
    // Before anything is read: a chunk found corrupt changes this site's replicas at once.
    store.set_replica_watch(Arc::new(catalog::copies::ReplicaRecorder { site: settings.site_name.clone() }));
    if let Some(t) = &transfers {
        let federation = t.endpoint().federation.clone();
        t.set_versions(Arc::new(crate::book::CatalogBook { catalog: site_catalog.clone(), federation }));
    }
    let sync = transfers.as_ref().map(|t| {
        let endpoint = t.clone();
        let dial: catalog::quic::Dial = Box::new(move |peer: String| {
            let endpoint = endpoint.clone();
            Box::pin(async move {
                endpoint.endpoint().connect_for(&peer, catalog::quic::ALPN).await.map_err(|e| e.to_string())
            })
        });
        Arc::new(catalog::quic::CatalogSync::new(site_catalog.clone(), t.endpoint().federation.clone(), dial))
    });
    let admin_token = crate::admin::ensure_token(&settings.data_dir)?;
    let tokens = Arc::new(crate::admin::Tokens { admin: admin_token.clone(), store: store.clone() });
    let federation = transfers.as_ref().map(|t| t.endpoint().federation.clone());
    let rules = transfers.as_ref().map(|t| {
        let replicator = Arc::new(crate::book::TransferReplicator(t.clone()));
        catalog::rules::RuleEngine::new(site_catalog.clone(), federation.clone(), sync.clone(), replicator)
    });
    // Stage-out sessions live in memory: the chunks of those a stop ended are let go.
    // (A failure only leaves their chunks held until the next start: not worth not serving.)
    match store.release_unrecorded_transfers().await {
        Ok(0) => {}
        Ok(released) => tracing::info!(released, "let go of the chunks of stage-out sessions the last stop ended"),
        Err(e) => {
            tracing::error!(error = %e, "could not let go of the chunks of stage-out sessions the last stop ended")
        }
    }
    let stager = Arc::new(catalog::stage::Stager::new(
        site_catalog.clone(),
        sync.clone(),
        rules.as_ref().map(|r| r.replicator()),
        settings.stage_chunker,
    ));
    tokio::spawn(stage_sweep_loop(stager.clone()));
    let catalog = Arc::new(catalog::http::CatalogState {
        stager,
        catalog: site_catalog,
        sync: sync.clone(),
        auth: tokens,
        federation,
        rules: rules.clone(),
    });
    let listen_file = settings.data_dir.join(LISTEN_FILE);
    write_atomically(&listen_file, &format!("{listeners}\n"))?;

    let state = Arc::new(AdminState {
        store: store.clone(),
        ready: false.into(),
        listeners: listeners.clone(),
        token: admin_token,
        transfers: transfers.clone(),
        catalog,
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    if let Some((listener, tls)) = admin_tls {
        // The same routes, for clients off this host; the S3 listener's connection code.
        let service = hyper_util::service::TowerToHyperService::new(admin::router(state.clone()));
        let limits = s3_gateway::server::ConnectionLimits::default();
        tokio::spawn(s3_gateway::server::serve("admin", listener, service, Some(tls), limits, shutdown_rx.clone()));
    }
    let admin_server = tokio::spawn({
        let router = admin::router(state.clone());
        let mut rx = shutdown_rx.clone();
        async move {
            axum::serve(admin_listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
        }
    });
    let s3_server = tokio::spawn(s3_gateway::server::serve(
        "s3",
        s3_listener,
        s3_service,
        s3_tls,
        settings.s3_limits.clone(),
        shutdown_rx.clone(),
    ));
    let maintenance = tokio::spawn(maintenance_loop(store.clone(), settings.clone(), shutdown_rx.clone()));
    tokio::spawn(replica_events_loop(state.catalog.catalog.clone()));
    tokio::spawn(compaction_loop(state.catalog.catalog.clone(), settings.catalog_checkpoint_every));

    if let Some(t) = &transfers {
        t.resume_saved().await.context("resuming saved transfers")?;
        let serving = sync.clone();
        tokio::spawn(t.clone().accept_loop_with(move |protocol, conn, peer| match &serving {
            Some(sync) if protocol == catalog::quic::ALPN => {
                tokio::spawn(sync.clone().serve(conn, peer));
            }
            _ => conn.close(0u32.into(), b"protocol not served"),
        }));
        if let Some(sync) = &sync {
            let federation = &t.endpoint().federation;
            let peers: Vec<String> =
                federation.sites().map(|s| s.name.clone()).filter(|name| *name != settings.site_name).collect();
            tokio::spawn(sync.clone().run(peers));
        }
        if let Some(rules) = &rules {
            tokio::spawn(rules.clone().run());
        }
    }
    state.ready.store(true, Ordering::Release);
    tracing::info!(site = %settings.site_name, data_dir = %settings.data_dir.display(), %listeners, "ready");
    println!("{listeners}");

    signals.await?;
    tracing::info!("shutting down: draining requests");
    state.ready.store(false, Ordering::Release);
    let _ = shutdown_tx.send(true);
    admin_server.await.context("admin server task")?.context("admin server")?;
    s3_server.await.context("s3 server task")?;
    maintenance.await.context("maintenance task")?;
    if let Some(t) = &transfers {
        // Peers see the connection close and resume later; what was received is kept.
        t.shutdown().await;
    }
    store.flush().await.context("flushing metadata")?;
    let _ = std::fs::remove_file(&listen_file);
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM; the handlers are in place when this returns.
fn shutdown_signals() -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    })
}

/// Appends the events of this site's replicas that quarantines and repairs changed.
async fn replica_events_loop(catalog: Arc<catalog::Catalog<catalog::in_store::InStore>>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tick.tick().await;
        if let Err(e) = catalog::copies::publish_outbox(&catalog).await {
            tracing::warn!(error = %e, "could not publish replica changes");
        }
    }
}

/// Checkpoints this site's catalog log when due, and drops the events that checkpoints
/// (its own and other sites') made dead.
async fn compaction_loop(catalog: Arc<catalog::Catalog<catalog::in_store::InStore>>, every: u64) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        tick.tick().await;
        match catalog.checkpoint_if_due(every, catalog::now_ms()).await {
            Ok(Some(seq)) => tracing::info!(seq, "checkpointed the catalog log"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not checkpoint the catalog log"),
        }
        match catalog.compact().await {
            Ok(mismatched) => {
                for refusal in mismatched {
                    tracing::error!(%refusal, "a catalog checkpoint does not match the log held here; kept whole");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not compact the catalog logs"),
        }
    }
}

/// Ends the stage-out sessions left idle, so that what they hold goes even when no new
/// session is opened (each open sweeps too).
async fn stage_sweep_loop(stager: Arc<catalog::stage::Stager>) {
    let every = std::time::Duration::from_secs(catalog::stage::SESSION_IDLE_SECS / 10);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        stager.drop_idle().await;
    }
}

/// Periodic GC and scrub, stopped by shutdown.
async fn maintenance_loop(store: Arc<Store>, settings: Settings, mut shutdown: watch::Receiver<bool>) {
    let far = std::time::Duration::from_secs(u64::MAX / 4);
    let mut gc = tokio::time::interval(settings.gc_interval.unwrap_or(far));
    let mut scrub = tokio::time::interval(settings.scrub_interval.unwrap_or(far));
    // Both intervals fire at once on creation; skip that so start-up stays quick.
    gc.tick().await;
    scrub.tick().await;
    loop {
        tokio::select! {
            // The only change ever sent is the shutdown itself.
            _ = shutdown.changed() => return,
            _ = gc.tick(), if settings.gc_interval.is_some() => {
                if let Err(e) = store.gc().await { tracing::error!(error = %e, "periodic gc failed"); }
            }
            _ = scrub.tick(), if settings.scrub_interval.is_some() => {
                if let Err(e) = store.scrub().await { tracing::error!(error = %e, "periodic scrub failed"); }
            }
        }
    }
}

fn write_atomically(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
