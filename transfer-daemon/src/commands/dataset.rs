//! `clusster dataset publish|list|describe|tag|show|checkout|share|evict|pin|unpin`, `clusster rule` and `clusster catalog placement`: the
//! catalog's routes on the running daemon.

use super::{UsageError, print_report};
use crate::cli::{AdminArgs, CatalogCommand, DatasetCommand, RuleCommand};
use crate::client::AdminClient;
use catalog::http::{
    CheckedOut, CheckoutRequest, DatasetEntry, DatasetView, DescribeRequest, FeedPage, PlacementAnswer, PublishRequest,
    ShareRequest, TagRequest,
};
use catalog::http::{EvictRequest, PinRequest, PinView, RuleRequest};
use catalog::keeping::Evicted;
use catalog::publish::Published;
use catalog::rules::RuleStatus;
use reqwest::Method;

fn client(args: &AdminArgs) -> anyhow::Result<AdminClient> {
    AdminClient::locate(args.admin.as_deref(), args.data_dir.as_deref())
}

/// `NS/NAME` into its parts.
fn dataset(text: &str) -> Result<(&str, &str), UsageError> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok((ns, name)),
        _ => Err(UsageError(format!("{text:?}: name a dataset as NAMESPACE/NAME, as in paris.climate/era5"))),
    }
}

/// `NS/NAME@TAG` (or `@VERSION-ID`) into namespace, name and the reference.
fn version_ref(text: &str) -> Result<(&str, &str, &str), UsageError> {
    let (name, reference) = text.rsplit_once('@').ok_or_else(|| {
        UsageError(format!("{text:?}: name the version as NAMESPACE/NAME@TAG or NAMESPACE/NAME@VERSION-ID"))
    })?;
    let (ns, name) = dataset(name)?;
    Ok((ns, name, reference))
}

/// `path?k=v&…` with the values percent-encoded.
fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://x").expect("a valid URL");
    url.set_path(path);
    url.query_pairs_mut().extend_pairs(pairs);
    format!("{}?{}", url.path(), url.query().unwrap_or_default())
}

/// `BUCKET` or `BUCKET/PREFIX` into its parts.
fn location(text: &str) -> Result<(&str, &str), UsageError> {
    let (bucket, prefix) = text.split_once('/').unwrap_or((text, ""));
    if bucket.is_empty() {
        return Err(UsageError(format!("{text:?}: give BUCKET or BUCKET/PREFIX/")));
    }
    Ok((bucket, prefix))
}

pub(super) async fn run(command: DatasetCommand) -> anyhow::Result<()> {
    match command {
        DatasetCommand::Publish { source, dataset: name, tag, admin } => {
            let (ns, name) = dataset(&name)?;
            let (bucket, prefix) = location(&source)?;
            let request = PublishRequest { bucket: bucket.into(), prefix: prefix.into(), tag: tag.clone() };
            let path = format!("/catalog/datasets/{ns}/{name}/versions");
            let published: Published = client(&admin)?.call(Method::POST, &path, Some(&request)).await?;
            print_report(&admin, &published, |p| {
                let tagged = tag.as_ref().map(|t| format!(", tagged {t}")).unwrap_or_default();
                let what = if p.new { "published" } else { "unchanged, already published as" };
                format!("{what} {ns}/{name}@{} ({} files, {} bytes{tagged})", p.version, p.files, p.bytes)
            });
        }
        DatasetCommand::List { ns, name, tag, meta, admin } => {
            let mut query = vec![("ns", ns.as_str()), ("name", name.as_str())];
            if let Some(tag) = &tag {
                query.push(("tag", tag));
            }
            if let Some(meta) = &meta {
                query.push(("meta", meta));
            }
            let path = with_query("/catalog/datasets", &query);
            let entries: Vec<DatasetEntry> = client(&admin)?.call_without_body(Method::GET, &path).await?;
            print_report(&admin, &entries, |entries| {
                let rows: Vec<String> =
                    entries.iter().map(|e| format!("{}/{}  {} version(s)", e.ns, e.name, e.versions)).collect();
                if rows.is_empty() { "no datasets".to_owned() } else { rows.join("\n") }
            });
        }
        DatasetCommand::Describe { dataset: name, pairs, clear: _, admin } => {
            let (ns, name) = dataset(&name)?;
            let mut metadata = std::collections::BTreeMap::new();
            for pair in &pairs {
                let (key, value) =
                    pair.split_once('=').ok_or_else(|| UsageError(format!("{pair:?}: give metadata as KEY=VALUE")))?;
                metadata.insert(key.to_owned(), value.to_owned());
            }
            let path = format!("/catalog/datasets/{ns}/{name}/metadata");
            let described: DescribeRequest =
                client(&admin)?.call(Method::PUT, &path, Some(&DescribeRequest { metadata })).await?;
            print_report(&admin, &described, |d| match d.metadata.is_empty() {
                true => format!("{ns}/{name} has no metadata now"),
                false => {
                    let pairs: Vec<String> = d.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{ns}/{name}: {}", pairs.join(", "))
                }
            });
        }
        DatasetCommand::Tag { version, tag, admin } => {
            let (ns, name, reference) = version_ref(&version)?;
            let path = format!("/catalog/datasets/{ns}/{name}/tags/{tag}");
            let moved: serde_json::Value =
                client(&admin)?.call(Method::PUT, &path, Some(&TagRequest { version: reference.into() })).await?;
            print_report(&admin, &moved, |m| {
                format!("{ns}/{name}@{tag} now names {}", m["version"].as_str().unwrap_or("?"))
            });
        }
        DatasetCommand::Show { dataset: name, admin } => {
            let (ns, name) = dataset(&name)?;
            let view: DatasetView =
                client(&admin)?.call_without_body(Method::GET, &format!("/catalog/datasets/{ns}/{name}")).await?;
            print_report(&admin, &view, |v| {
                let shared = v.shared_with.as_ref().map(|s| format!(", shared with {s}")).unwrap_or_default();
                let mut lines = vec![format!("{}/{} (home {}, project {}{shared})", v.ns, v.name, v.home, v.project)];
                lines.extend(v.metadata.iter().map(|(k, value)| format!("  {k} = {value}")));
                for version in &v.versions {
                    let tags =
                        if version.tags.is_empty() { String::new() } else { format!(" [{}]", version.tags.join(", ")) };
                    lines
                        .push(format!("  {}{tags}: {} files, {} bytes", version.version, version.files, version.bytes));
                    for r in &version.replicas {
                        lines.push(format!("    at {}: {}, {} bytes held", r.site, r.state, r.bytes_held));
                    }
                }
                lines.join("\n")
            });
        }
        DatasetCommand::Checkout { version, dest, admin } => {
            let (ns, name, reference) = version_ref(&version)?;
            let (bucket, prefix) = location(&dest)?;
            let request = CheckoutRequest { version: reference.into(), bucket: bucket.into(), prefix: prefix.into() };
            let path = format!("/catalog/datasets/{ns}/{name}/checkout");
            let done: CheckedOut = client(&admin)?.call(Method::POST, &path, Some(&request)).await?;
            print_report(&admin, &done, |d| {
                format!("checked out {ns}/{name}@{} into {bucket}/{prefix}: {} files", d.version, d.files)
            });
        }
        DatasetCommand::Evict { version, admin } => {
            let (ns, name, reference) = version_ref(&version)?;
            let path = format!("/catalog/datasets/{ns}/{name}/evict");
            let evicted: Evicted =
                client(&admin)?.call(Method::POST, &path, Some(&EvictRequest { version: reference.into() })).await?;
            print_report(&admin, &evicted, |e| {
                format!("evicted {ns}/{name}@{reference} ({}) at {}", e.version, e.site)
            });
        }
        DatasetCommand::Pin { version, job, duration, admin } => {
            version_ref(&version)?;
            let seconds = parse_duration(&duration)?;
            let request = PinRequest { version: version.clone(), job, seconds };
            let pin: PinView = client(&admin)?.call(Method::POST, "/catalog/pins", Some(&request)).await?;
            print_report(&admin, &pin, |p| {
                format!("pinned {version} at {} for job {} until {} (pin {})", p.site, p.job, p.until_ms, p.id)
            });
        }
        DatasetCommand::Unpin { id, admin } => {
            client(&admin)?.call_without_body::<()>(Method::DELETE, &format!("/catalog/pins/{id}")).await?;
            print_report(&admin, &serde_json::json!({ "unpinned": id }), |_| format!("unpinned {id}"));
        }
        DatasetCommand::Share { ns, sites, admin } => {
            let path = format!("/catalog/namespaces/{ns}/sites");
            let shared: serde_json::Value =
                client(&admin)?.call(Method::PUT, &path, Some(&ShareRequest { sites })).await?;
            print_report(&admin, &shared, |s| {
                format!("{ns} may now be held by the sites matching {}", s["sites"].as_str().unwrap_or("?"))
            });
        }
    }
    Ok(())
}

/// `90`, `90s`, `30m`, `12h`, `7d` → seconds.
pub(super) fn parse_duration(text: &str) -> Result<u64, UsageError> {
    let (digits, unit) = match text.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&text[..at], c),
        _ => (text, 's'),
    };
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => 0,
    };
    match digits.parse::<u64>() {
        Ok(n) if n > 0 && scale > 0 => Ok(n.saturating_mul(scale)),
        _ => Err(UsageError(format!("{text:?}: give a duration as seconds or with a unit: 90s, 30m, 12h, 7d"))),
    }
}

pub(super) async fn rule(command: RuleCommand) -> anyhow::Result<()> {
    let describe = |r: &RuleStatus| {
        let what = match &r.rule.target {
            catalog::RuleTarget::Version(v) => format!("version {v}"),
            catalog::RuleTarget::Dataset { ns, name } => format!("every version of {ns}/{name}"),
        };
        let mut lines = vec![format!(
            "{}/{}: {} copies of {what} on {:?}: {}{}",
            r.site,
            r.id,
            r.rule.copies,
            r.rule.sites,
            serde_json::to_value(r.state).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            r.reason.as_ref().map(|why| format!(" ({why})")).unwrap_or_default()
        )];
        for (version, sites) in &r.copies {
            lines.push(format!(
                "  {version}: complete at {}",
                if sites.is_empty() { "none".into() } else { sites.join(", ") }
            ));
        }
        lines.join("\n")
    };
    match command {
        RuleCommand::Add { id, version, dataset, copies, sites, duration, admin } => {
            let until_ms = match duration {
                Some(d) => Some(now_ms() + parse_duration(&d)? * 1000),
                None => None,
            };
            let request = RuleRequest { id, version, dataset, copies, sites, until_ms };
            let added: RuleStatus = client(&admin)?.call(Method::POST, "/catalog/rules", Some(&request)).await?;
            print_report(&admin, &added, describe);
        }
        RuleCommand::List(admin) => {
            let all: Vec<RuleStatus> = client(&admin)?.call_without_body(Method::GET, "/catalog/rules").await?;
            print_report(&admin, &all, |all| {
                if all.is_empty() {
                    "no rules".to_owned()
                } else {
                    all.iter().map(describe).collect::<Vec<_>>().join("\n")
                }
            });
        }
        RuleCommand::Show { id, admin } => {
            let all: Vec<RuleStatus> = client(&admin)?.call_without_body(Method::GET, "/catalog/rules").await?;
            let found: Vec<&RuleStatus> = all
                .iter()
                .filter(|r| match id.split_once('/') {
                    Some((site, rule)) => r.site == site && r.id == rule,
                    None => r.id == id,
                })
                .collect();
            match found[..] {
                [one] => print_report(&admin, one, describe),
                [] => anyhow::bail!("no rule {id} in the catalog here (`clusster rule list` shows them)"),
                _ => return Err(UsageError(format!("several sites have a rule {id}: name it as SITE/{id}")).into()),
            }
        }
        RuleCommand::Delete { id, admin } => {
            client(&admin)?.call_without_body::<()>(Method::DELETE, &format!("/catalog/rules/{id}")).await?;
            print_report(&admin, &serde_json::json!({ "deleted": id }), |_| format!("deleted rule {id}"));
        }
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(super) async fn catalog(command: CatalogCommand) -> anyhow::Result<()> {
    match command {
        CatalogCommand::Feed { cursor, limit, admin } => {
            let path = with_query("/catalog/feed", &[("cursor", &cursor), ("limit", &limit.to_string())]);
            let page: FeedPage = client(&admin)?.call_without_body(Method::GET, &path).await?;
            print_report(&admin, &page, |p| {
                let mut lines: Vec<String> = p
                    .events
                    .iter()
                    .map(|e| format!("{}#{} {}", e.origin, e.seq, serde_json::to_string(&e.body).unwrap_or_default()))
                    .collect();
                lines.push(format!("cursor: {}", p.cursor));
                lines.join("\n")
            });
        }
        CatalogCommand::Placement { version, sites, admin } => {
            let (ns, name, reference) = version_ref(&version)?;
            let full_name = format!("{ns}/{name}");
            let path =
                with_query("/catalog/placement", &[("dataset", &full_name), ("version", reference), ("sites", &sites)]);
            let answer: PlacementAnswer = client(&admin)?.call_without_body(Method::GET, &path).await?;
            print_report(&admin, &answer, |a| {
                let mut lines = vec![format!("{full_name}@{}", a.version)];
                for s in &a.sites {
                    lines.push(match (&s.error, s.bytes_missing) {
                        (Some(e), _) => format!("  {}: {e}", s.site),
                        (None, Some(0)) => format!("  {}: all {} bytes there", s.site, s.bytes_present.unwrap_or(0)),
                        (None, missing) => format!(
                            "  {}: {} bytes there, {} missing, from {} in about {:.1} s ({})",
                            s.site,
                            s.bytes_present.unwrap_or(0),
                            missing.unwrap_or(0),
                            s.best_source.as_deref().unwrap_or("nowhere"),
                            s.estimated_secs.unwrap_or(f64::INFINITY),
                            match s.measured_bytes_per_sec {
                                Some(rate) => format!("at the {:.1} MB/s measured", rate / 1e6),
                                None => "by the link table".to_owned(),
                            }
                        ),
                    });
                }
                lines.join("\n")
            });
        }
    }
    Ok(())
}
