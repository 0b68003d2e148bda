//! The config's documented default, settling and its refusals.

use super::*;

#[test]
fn documented_default_parses_to_the_defaults() {
    let raw: RawConfig = toml::from_str(&RawConfig::documented_default(Path::new("/srv/site"))).unwrap();
    let settings = raw.settle(&Overrides::default(), Path::new("/")).unwrap();
    assert_eq!(settings.data_dir, Path::new("/srv/site"));
    assert_eq!(settings.store.chunker, ChunkerConfig::default());
    assert_eq!(settings.admin_listen.to_string(), "127.0.0.1:9470");
    assert_eq!(settings.federation, None, "not federated by default");
    assert_eq!(settings.transfer, TransportSettings::default());
}

#[test]
fn federation_section_resolves_paths_and_checks_values() {
    let text = "[site]\nname = \"paris\"\ndata_dir = \"/srv/paris\"\n[federation]\nfile = \"fed/federation.toml\"\n\
                quic_listen = \"127.0.0.1:0\"\n[transfer]\ncongestion_controller = \"cubic\"\nconnections_per_peer = 4\n";
    let settings =
        toml::from_str::<RawConfig>(text).unwrap().settle(&Overrides::default(), Path::new("/etc/clusster")).unwrap();
    let federation = settings.federation.unwrap();
    assert_eq!(federation.file, Path::new("/etc/clusster/fed/federation.toml"));
    assert_eq!(federation.tls_dir, Path::new("/srv/paris/tls"));
    assert_eq!(federation.quic_listen.port(), 0);
    assert_eq!(settings.transfer.connections_per_peer, 4);

    let bad = |text: &str| {
        let raw = toml::from_str::<RawConfig>(text).unwrap();
        format!("{:#}", raw.settle(&Overrides::default(), Path::new("/")).unwrap_err())
    };
    let e = bad("[site]\nname = \"Paris\"\n[federation]\nfile = \"f.toml\"\n");
    assert!(e.contains("[site] name"), "{e}");
    let e = bad("[site]\nname = \"paris\"\n[federation]\nfile = \"f.toml\"\nquic_listen = \"paris:7444\"\n");
    assert!(e.contains("quic_listen"), "{e}");
    let e = bad("[transfer]\nconnections_per_peer = 0\n");
    assert!(e.contains("connections_per_peer"), "{e}");
    assert!(toml::from_str::<RawConfig>("[transfer]\ncongestion_controller = \"vegas\"\n").is_err());
    assert!(toml::from_str::<RawConfig>("[federation]\nfiles = \"x\"\n").is_err());
}

#[test]
fn bad_values_are_refused_with_the_reason() {
    let raw: RawConfig = toml::from_str("[store]\nchunk_avg_bytes = 65000\n").unwrap();
    let err = raw.settle(&Overrides::default(), Path::new("/")).unwrap_err();
    assert!(format!("{err:#}").contains("power of two"), "{err:#}");
    assert!(toml::from_str::<RawConfig>("[store]\nno_such_field = 1\n").is_err());
    let raw = RawConfig::default();
    let bad = Overrides { admin_listen: Some("localhost".into()), ..Default::default() };
    assert!(raw.settle(&bad, Path::new("/")).is_err());
    let raw: RawConfig = toml::from_str("[store]\ncodec = \"brotli\"\n").unwrap();
    let err = raw.settle(&Overrides::default(), Path::new("/")).unwrap_err();
    assert!(format!("{err:#}").contains("lz4"), "{err:#}");
    let raw: RawConfig = toml::from_str("[offload]\nengines = [\"gpu\"]\n").unwrap();
    let err = raw.settle(&Overrides::default(), Path::new("/")).unwrap_err();
    assert!(format!("{err:#}").contains("agent"), "{err:#}");
    // The admin routes' HTTPS listener: all three or none, an address, paths from the config.
    let raw: RawConfig = toml::from_str("[admin]\ntls_listen = \"0.0.0.0:9471\"\ntls_cert = \"c.pem\"\n").unwrap();
    let err = raw.settle(&Overrides::default(), Path::new("/")).unwrap_err();
    assert!(format!("{err:#}").contains("tls_listen, tls_cert and tls_key"), "{err:#}");
    let text = "[admin]\ntls_listen = \"site:9471\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n";
    let err = toml::from_str::<RawConfig>(text).unwrap().settle(&Overrides::default(), Path::new("/")).unwrap_err();
    assert!(format!("{err:#}").contains("tls_listen"), "{err:#}");
    let text = "[admin]\ntls_listen = \"0.0.0.0:9471\"\ntls_cert = \"c.pem\"\ntls_key = \"/k.pem\"\n";
    let s = toml::from_str::<RawConfig>(text).unwrap().settle(&Overrides::default(), Path::new("/etc/c")).unwrap();
    let (addr, cert, key) = s.admin_tls.unwrap();
    assert_eq!((addr.port(), cert.as_path(), key.as_path()), (9471, Path::new("/etc/c/c.pem"), Path::new("/k.pem")));
}

#[test]
fn offload_section_resolves_paths_and_codecs() {
    let text = "[store]\ncodec = \"lz4\"\n[offload]\nengines = [\"agent\"]\nagent_cores = [1]\n";
    let raw: RawConfig = toml::from_str(text).unwrap();
    let s = raw.settle(&Overrides::default(), Path::new("/srv")).unwrap();
    assert_eq!(s.store.codec, hw_offload::Codec::Lz4);
    assert!(s.offload.use_agent);
    assert_eq!(s.offload.agent_cores, vec![1]);
    assert_eq!(s.offload.agent_socket, Path::new("/srv/clusster-data/offload-agent.sock"));
}
