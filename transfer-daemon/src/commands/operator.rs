//! Verbs that ask the running daemon through its admin API: access keys, bucket grants and
//! shares with sites, and the maintenance passes (gc, scrub, check, repair).

use super::{DamageFound, UsageError, print_report};
use crate::api::{
    BucketShare, CheckReport, CreatedKey, CreatedToken, GcReport, KeyInfo, NewKey, NewToken, RepairReport, ScrubReport,
    SiteRights, Unshared,
};
use crate::cli::{AdminArgs, BucketCommand, KeyCommand, TokenCommand};
use crate::client::AdminClient;
use reqwest::Method;

fn client(args: &AdminArgs) -> anyhow::Result<AdminClient> {
    AdminClient::locate(args.admin.as_deref(), args.data_dir.as_deref())
}

pub(super) async fn key(command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create { project, admin } => {
            let key: CreatedKey = client(&admin)?.call(Method::POST, "/admin/keys", Some(&NewKey { project })).await?;
            print_report(&admin, &key, |k| {
                format!(
                    "access key id:     {}\nsecret access key: {}\nproject:           {}\n(the secret is not shown again)",
                    k.access_key_id, k.secret_access_key, k.project
                )
            });
        }
        KeyCommand::List(admin) => {
            let keys: Vec<KeyInfo> = client(&admin)?.call_without_body(Method::GET, "/admin/keys").await?;
            print_report(&admin, &keys, |keys| {
                let rows: Vec<String> = keys.iter().map(|k| format!("{}  {}", k.access_key_id, k.project)).collect();
                if rows.is_empty() { "no keys".to_owned() } else { rows.join("\n") }
            });
        }
        KeyCommand::Delete { id, admin } => {
            client(&admin)?.call_without_body::<()>(Method::DELETE, &format!("/admin/keys/{id}")).await?;
            print_report(&admin, &serde_json::json!({ "deleted": id }), |_| format!("deleted key {id}"));
        }
    }
    Ok(())
}

pub(super) async fn token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { project, scopes, admin } => {
            let created: CreatedToken =
                client(&admin)?.call(Method::POST, "/admin/tokens", Some(&NewToken { project, scopes })).await?;
            print_report(&admin, &created, |t| {
                format!(
                    "token:   {}\nid:      {}\nproject: {}\nscopes:  {}\n(the token is not shown again)",
                    t.token,
                    t.id,
                    t.project,
                    t.scopes.join(", ")
                )
            });
        }
        TokenCommand::List(admin) => {
            let tokens: Vec<serde_json::Value> =
                client(&admin)?.call_without_body(Method::GET, "/admin/tokens").await?;
            print_report(&admin, &tokens, |tokens| {
                let rows: Vec<String> = tokens
                    .iter()
                    .map(|t| {
                        format!(
                            "{}  {}  {}",
                            t["id"].as_str().unwrap_or("?"),
                            t["project"].as_str().unwrap_or("?"),
                            t["scopes"]
                        )
                    })
                    .collect();
                if rows.is_empty() { "no tokens".to_owned() } else { rows.join("\n") }
            });
        }
        TokenCommand::Delete { id, admin } => {
            client(&admin)?.call_without_body::<()>(Method::DELETE, &format!("/admin/tokens/{id}")).await?;
            print_report(&admin, &serde_json::json!({ "deleted": id }), |_| format!("deleted token {id}"));
        }
    }
    Ok(())
}

pub(super) async fn bucket(command: BucketCommand) -> anyhow::Result<()> {
    match command {
        BucketCommand::Allow { bucket, project, admin } => grant(Method::PUT, bucket, project, admin, "allowed").await,
        BucketCommand::Revoke { bucket, project, admin } => {
            grant(Method::DELETE, bucket, project, admin, "revoked").await
        }
        BucketCommand::Share { bucket, site, read, write, admin } => {
            if !read && !write {
                return Err(UsageError(format!(
                    "say what {site} may do with {bucket}: --read, --write or both (`clusster bucket unshare` \
                     withdraws a share)"
                ))
                .into());
            }
            let path = format!("/admin/buckets/{bucket}/sites/{site}");
            let share: BucketShare =
                client(&admin)?.call(Method::PUT, &path, Some(&SiteRights { read, write })).await?;
            print_report(&admin, &share, |s| {
                format!("shared: bucket {} with site {} for {}", s.bucket, s.site, s.rights())
            });
            Ok(())
        }
        BucketCommand::Unshare { bucket, site, admin } => {
            let path = format!("/admin/buckets/{bucket}/sites/{site}");
            let done: Unshared = client(&admin)?.call_without_body(Method::DELETE, &path).await?;
            print_report(&admin, &done, |d| match d.was_shared {
                true => format!("unshared: bucket {} with site {}", d.bucket, d.site),
                false => format!("bucket {} was not shared with site {}", d.bucket, d.site),
            });
            Ok(())
        }
        BucketCommand::Shares { bucket, admin } => {
            let shares: Vec<BucketShare> =
                client(&admin)?.call_without_body(Method::GET, &format!("/admin/buckets/{bucket}/sites")).await?;
            print_report(&admin, &shares, |shares| {
                let rows: Vec<String> = shares.iter().map(|s| format!("{}  {}", s.site, s.rights())).collect();
                if rows.is_empty() { format!("bucket {bucket} is shared with no site") } else { rows.join("\n") }
            });
            Ok(())
        }
    }
}

async fn grant(method: Method, bucket: String, project: String, admin: AdminArgs, verb: &str) -> anyhow::Result<()> {
    client(&admin)?.call_without_body::<()>(method, &format!("/admin/buckets/{bucket}/grants/{project}")).await?;
    print_report(&admin, &serde_json::json!({ "bucket": bucket, "project": project, verb: true }), |_| {
        format!("{verb}: project {project} on bucket {bucket}")
    });
    Ok(())
}

pub(super) async fn gc(args: &AdminArgs) -> anyhow::Result<()> {
    let report: GcReport = client(args)?.call_without_body(Method::POST, "/admin/gc").await?;
    print_report(args, &report, |r| {
        format!(
            "gc: {} chunks, {} packs deleted, {} compacted, {} orphan packs, {} bytes freed",
            r.chunks_deleted, r.packs_deleted, r.packs_compacted, r.orphan_packs_deleted, r.bytes_freed
        )
    });
    Ok(())
}

pub(super) async fn scrub(args: &AdminArgs) -> anyhow::Result<()> {
    let report: ScrubReport = client(args)?.call_without_body(Method::POST, "/admin/scrub").await?;
    print_report(args, &report, |r| {
        format!("scrub: {} chunks ({} bytes) verified, {} corrupt", r.chunks_checked, r.bytes_checked, r.corrupt.len())
    });
    match report.corrupt.len() {
        0 => Ok(()),
        n => {
            Err(DamageFound(format!("{n} corrupt chunks quarantined; `clusster repair` fetches them from peers"))
                .into())
        }
    }
}

pub(super) async fn repair(args: &AdminArgs) -> anyhow::Result<()> {
    let report: RepairReport = client(args)?.call_without_body(Method::POST, "/admin/repair").await?;
    let missing = report.missing.len();
    print_report(args, &report, |r| {
        let from = serde_json::to_string(&r.from).expect("a map of counts serialises");
        format!("repair: {} corrupt chunks, {} repaired from {from}, {missing} still missing", r.asked, r.repaired)
    });
    if missing > 0 {
        return Err(DamageFound(format!("{missing} chunks are held by no reachable site")).into());
    }
    Ok(())
}

pub(super) async fn check(args: &AdminArgs) -> anyhow::Result<()> {
    let report: CheckReport = client(args)?.call_without_body(Method::GET, "/admin/check").await?;
    let mismatches = report.refcount_mismatches.len();
    let missing = report.missing_chunks.len();
    print_report(args, &report, |r| {
        format!(
            "check: {} objects, {} parts, {} chunks referenced, {mismatches} count mismatches, {missing} missing chunks",
            r.objects, r.parts, r.chunks_referenced
        )
    });
    if !report.is_clean() {
        return Err(DamageFound("the store is inconsistent; see the report".into()).into());
    }
    Ok(())
}
