//! `edgec verity format` and `edgec verity verify`: dm-verity hash trees built by edge-verity,
//! interchangeable with veritysetup's (same files, same root hash, same printed header).

use std::path::Path;

use edge_verity::{
    HashImage, Params, RootHash, VerityError, format_file, format_salt, parse_salt, parse_uuid,
};

use crate::Status;
use crate::output::usage_error;

/// Writes the hash file and prints the header exactly as `veritysetup format` does, so scripts
/// that read its `Root hash:` line work with either tool.
pub fn format(data: &Path, hash: &Path, salt: Option<&str>, uuid: Option<&str>) -> Status {
    let params = match params(salt, uuid) {
        Ok(params) => params,
        Err(error) => {
            usage_error(&error.to_string());
            return Status::Failure;
        }
    };
    let image = match format_file(data, hash, &params) {
        Ok(image) => image,
        Err(error) => {
            usage_error(&error.to_string());
            return Status::Failure;
        }
    };
    note_derived(&params);
    out_raw!("{}", header(hash, &image));
    if image.uncovered_bytes() > 0 {
        err!(
            "note: the last {} bytes of `{}` are not a whole block and are not covered, as with \
             veritysetup",
            image.uncovered_bytes(),
            data.display()
        );
    }
    Status::Clean
}

/// Exit 0 when everything verifies, 1 naming the first bad block (or a damaged hash file), 2
/// when the files cannot be read.
pub fn verify(data: &Path, hash: &Path, root_hash: &str) -> Status {
    let result = root_hash
        .parse::<RootHash>()
        .and_then(|root_hash| edge_verity::verify_files(data, hash, &root_hash));
    match result {
        Ok(tree) => {
            out!("verified {} data blocks", tree.data_blocks());
            Status::Clean
        }
        Err(error) if error.is_unreadable() => {
            usage_error(&error.to_string());
            Status::Failure
        }
        Err(error) => {
            err!("verification failed: {error}");
            Status::Errors
        }
    }
}

fn params(salt: Option<&str>, uuid: Option<&str>) -> Result<Params, VerityError> {
    let mut params = Params::derived();
    if let Some(salt) = salt {
        params = params.with_salt(parse_salt(salt)?)?;
    }
    if let Some(uuid) = uuid {
        params = params.with_uuid(parse_uuid(uuid)?);
    }
    Ok(params)
}

fn note_derived(params: &Params) {
    match (params.salt_is_derived(), params.uuid_is_derived()) {
        (true, true) => err!("note: salt and UUID derived from the data (reproducible)"),
        (true, false) => err!("note: salt derived from the data (reproducible)"),
        (false, true) => err!("note: UUID derived from the root hash (reproducible)"),
        (false, false) => {}
    }
}

/// veritysetup's `format` output, byte for byte.
fn header(hash: &Path, image: &HashImage) -> String {
    let superblock = image.superblock();
    format!(
        "VERITY header information for {}\n\
         UUID:            \t{}\n\
         Hash type:       \t1\n\
         Data blocks:     \t{}\n\
         Data block size: \t4096\n\
         Hash blocks:     \t{}\n\
         Hash block size: \t4096\n\
         Hash algorithm:  \tsha256\n\
         Salt:            \t{}\n\
         Root hash:      \t{}\n\
         Hash device size: \t{} [bytes]\n",
        hash.display(),
        superblock.uuid,
        superblock.data_blocks,
        image.hash_blocks(),
        format_salt(&superblock.salt),
        image.root_hash(),
        image.bytes().len()
    )
}
