//! ACLs: the four canned ACLs S3 has for buckets and objects (`private`, `public-read`,
//! `public-read-write`, `authenticated-read`), given as `x-amz-acl`, as `x-amz-grant-*`
//! headers or as an AccessControlPolicy body. Grants that no canned ACL makes (another
//! account, an e-mail address, READ_ACP, log delivery) are refused with NotImplemented:
//! every ACL stored here is one of the four, so what GetBucketAcl/GetObjectAcl show is
//! exactly what access.rs enforces. The owner is always the bucket's project.

use crate::error::from_store;
use crate::{Gateway, access};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use store::CannedAcl;

const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";

const SUPPORTED: &str = "only the grants of the canned ACLs private, public-read, public-read-write and \
                         authenticated-read are supported (FULL_CONTROL for the owner, READ and WRITE for AllUsers, \
                         READ for AuthenticatedUsers)";

/// The ACL a request gives, in any of its three forms.
#[derive(Default)]
pub(crate) struct AclRequest<'a> {
    /// `x-amz-acl`
    pub(crate) canned: Option<&'a str>,
    /// `x-amz-grant-*`, by permission
    pub(crate) grants: Vec<(&'static str, Option<&'a str>)>,
    /// an AccessControlPolicy body (PutBucketAcl, PutObjectAcl)
    pub(crate) policy: Option<&'a AccessControlPolicy>,
}

impl<'a> AclRequest<'a> {
    pub(crate) fn headers(
        canned: Option<&'a str>,
        full_control: &'a Option<String>,
        read: &'a Option<String>,
        read_acp: &'a Option<String>,
        write: &'a Option<String>,
        write_acp: &'a Option<String>,
    ) -> Self {
        let grants = vec![
            (Permission::FULL_CONTROL, full_control.as_deref()),
            (Permission::READ, read.as_deref()),
            (Permission::READ_ACP, read_acp.as_deref()),
            (Permission::WRITE, write.as_deref()),
            (Permission::WRITE_ACP, write_acp.as_deref()),
        ];
        Self { canned, grants, policy: None }
    }

    /// The canned ACL it amounts to; None when it gives none. `owner` is the bucket's project.
    pub(crate) fn resolve(&self, owner: &str) -> S3Result<Option<CannedAcl>> {
        let header_grants: Vec<_> = self.grants.iter().filter_map(|(p, v)| v.map(|v| (*p, v))).collect();
        let forms = [self.canned.is_some(), !header_grants.is_empty(), self.policy.is_some()];
        if forms.iter().filter(|&&given| given).count() > 1 {
            return Err(s3_error!(
                InvalidRequest,
                "give an ACL one way only: x-amz-acl, x-amz-grant-* headers or an AccessControlPolicy body"
            ));
        }
        if let Some(canned) = self.canned {
            return canned_acl(canned).map(Some);
        }
        let mut opened = Opened::default();
        for (permission, list) in header_grants {
            for grantee in list.split(',').map(str::trim).filter(|g| !g.is_empty()) {
                let (kind, value) =
                    grantee.split_once('=').map(|(k, v)| (k.trim(), v.trim().trim_matches('"'))).ok_or_else(|| {
                        s3_error!(InvalidArgument, "grantee {grantee:?} is not of the form type=\"value\"")
                    })?;
                let grantee = match kind {
                    "uri" => Who::Group(value),
                    "id" => Who::User(value),
                    _ => Who::Other,
                };
                opened.add(grantee, permission, owner)?;
            }
        }
        if let Some(policy) = self.policy {
            if let Some(id) = policy.owner.as_ref().and_then(|o| o.id.as_deref())
                && id != owner
            {
                return Err(s3_error!(InvalidArgument, "the owner is {owner}, not {id}: ownership cannot change"));
            }
            for grant in policy.grants.iter().flatten() {
                let grantee =
                    grant.grantee.as_ref().ok_or_else(|| s3_error!(MalformedACLError, "a grant names no grantee"))?;
                let permission = grant
                    .permission
                    .as_ref()
                    .ok_or_else(|| s3_error!(MalformedACLError, "a grant names no permission"))?;
                let grantee = match (grantee.type_.as_str(), &grantee.uri, &grantee.id) {
                    (Type::GROUP, Some(uri), _) => Who::Group(uri),
                    (Type::CANONICAL_USER, _, Some(id)) => Who::User(id),
                    _ => Who::Other,
                };
                opened.add(grantee, permission.as_str(), owner)?;
            }
            return opened.canned().map(Some);
        }
        if forms[1] { opened.canned().map(Some) } else { Ok(None) }
    }
}

enum Who<'a> {
    Group(&'a str),
    User(&'a str),
    Other,
}

/// What a list of grants opens, beyond the owner's full control.
#[derive(Default)]
struct Opened {
    all_users_read: bool,
    all_users_write: bool,
    authenticated_read: bool,
}

impl Opened {
    fn add(&mut self, grantee: Who<'_>, permission: &str, owner: &str) -> S3Result<()> {
        match (grantee, permission) {
            (Who::User(id), Permission::FULL_CONTROL) if id == owner => {}
            (Who::Group(ALL_USERS), Permission::READ) => self.all_users_read = true,
            (Who::Group(ALL_USERS), Permission::WRITE) => self.all_users_write = true,
            (Who::Group(AUTHENTICATED_USERS), Permission::READ) => self.authenticated_read = true,
            _ => return Err(s3_error!(NotImplemented, "{SUPPORTED}")),
        }
        Ok(())
    }

    fn canned(&self) -> S3Result<CannedAcl> {
        match (self.all_users_read, self.all_users_write, self.authenticated_read) {
            (false, false, false) => Ok(CannedAcl::Private),
            (true, false, false) => Ok(CannedAcl::PublicRead),
            (true, true, false) => Ok(CannedAcl::PublicReadWrite),
            (false, false, true) => Ok(CannedAcl::AuthenticatedRead),
            _ => Err(s3_error!(NotImplemented, "{SUPPORTED}; these grants make none of them")),
        }
    }
}

/// The ACL an `x-amz-acl` value names. The owner of an object is the bucket's project, so
/// the bucket-owner-* ACLs are `private`.
pub(crate) fn canned_acl(value: &str) -> S3Result<CannedAcl> {
    match value {
        "private" | "bucket-owner-read" | "bucket-owner-full-control" => Ok(CannedAcl::Private),
        "public-read" => Ok(CannedAcl::PublicRead),
        "public-read-write" => Ok(CannedAcl::PublicReadWrite),
        "authenticated-read" => Ok(CannedAcl::AuthenticatedRead),
        "aws-exec-read" | "log-delivery-write" => {
            Err(s3_error!(NotImplemented, "the canned ACL {value} is not supported here"))
        }
        _ => Err(s3_error!(InvalidArgument, "{value:?} is not a canned ACL")),
    }
}

/// The owner and grants S3 shows for `acl`.
fn policy_of(acl: CannedAcl, owner: &str) -> (Owner, Vec<Grant>) {
    let group = |uri: &str, permission: &'static str| Grant {
        grantee: Some(Grantee {
            type_: Type::from_static(Type::GROUP),
            uri: Some(uri.to_owned()),
            display_name: None,
            email_address: None,
            id: None,
        }),
        permission: Some(Permission::from_static(permission)),
    };
    let mut grants = vec![Grant {
        grantee: Some(Grantee {
            type_: Type::from_static(Type::CANONICAL_USER),
            id: Some(owner.to_owned()),
            display_name: Some(owner.to_owned()),
            email_address: None,
            uri: None,
        }),
        permission: Some(Permission::from_static(Permission::FULL_CONTROL)),
    }];
    match acl {
        CannedAcl::Private => {}
        CannedAcl::PublicRead => grants.push(group(ALL_USERS, Permission::READ)),
        CannedAcl::PublicReadWrite => {
            grants.push(group(ALL_USERS, Permission::READ));
            grants.push(group(ALL_USERS, Permission::WRITE));
        }
        CannedAcl::AuthenticatedRead => grants.push(group(AUTHENTICATED_USERS, Permission::READ)),
    }
    (Owner { id: Some(owner.to_owned()), display_name: Some(owner.to_owned()) }, grants)
}

impl Gateway {
    pub(crate) async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        let bucket = &req.input.bucket;
        let owner = self.store.bucket(bucket).map_err(from_store)?.owner;
        let acl = self.store.bucket_settings(bucket).map_err(from_store)?.acl;
        let (owner, grants) = policy_of(acl, &owner);
        Ok(S3Response::new(GetBucketAclOutput { owner: Some(owner), grants: Some(grants) }))
    }

    pub(crate) async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        let pre = access::same_bucket(&req);
        let input = &req.input;
        let owner = self.store.bucket(&input.bucket).map_err(from_store)?.owner;
        let mut asked = AclRequest::headers(
            input.acl.as_ref().map(BucketCannedACL::as_str),
            &input.grant_full_control,
            &input.grant_read,
            &input.grant_read_acp,
            &input.grant_write,
            &input.grant_write_acp,
        );
        asked.policy = input.access_control_policy.as_ref();
        let acl = asked.resolve(&owner)?.ok_or_else(missing_acl)?;
        self.store.set_bucket_acl(&input.bucket, acl, &pre).await.map_err(from_store)?;
        Ok(S3Response::new(PutBucketAclOutput {}))
    }

    pub(crate) async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        let input = &req.input;
        let owner = self.store.bucket(&input.bucket).map_err(from_store)?.owner;
        let info = self.store.head_object(&input.bucket, &input.key).map_err(from_store)?;
        let acl = self.store.object_acl(&input.bucket, &input.key, &info.head).map_err(from_store)?;
        let (owner, grants) = policy_of(acl, &owner);
        Ok(S3Response::new(GetObjectAclOutput { owner: Some(owner), grants: Some(grants), ..Default::default() }))
    }

    pub(crate) async fn put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        let pre = access::same_bucket(&req);
        let input = &req.input;
        let owner = self.store.bucket(&input.bucket).map_err(from_store)?.owner;
        let mut asked = AclRequest::headers(
            input.acl.as_ref().map(ObjectCannedACL::as_str),
            &input.grant_full_control,
            &input.grant_read,
            &input.grant_read_acp,
            &input.grant_write,
            &input.grant_write_acp,
        );
        asked.policy = input.access_control_policy.as_ref();
        let acl = asked.resolve(&owner)?.ok_or_else(missing_acl)?;
        self.store.set_object_acl(&input.bucket, &input.key, acl, None, &pre).await.map_err(from_store)?;
        Ok(S3Response::new(PutObjectAclOutput::default()))
    }

    /// Sets the ACL a write asked for on the object it made (see `Store::set_object_acl`).
    pub(crate) async fn set_written_acl(
        &self,
        pre: &store::Precondition,
        made: &store::ObjectInfo,
        bucket: &str,
        acl: CannedAcl,
    ) -> S3Result<()> {
        if acl == CannedAcl::Private {
            return Ok(());
        }
        self.store.set_object_acl(bucket, &made.key, acl, Some(&made.head), pre).await.map_err(from_store)
    }
}

fn missing_acl() -> s3s::S3Error {
    s3_error!(MissingSecurityHeader, "give the ACL: x-amz-acl, x-amz-grant-* headers or an AccessControlPolicy body")
}
