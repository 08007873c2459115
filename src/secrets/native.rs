//! The OS keychain's three operations on one item (service + account), per platform:
//! macOS Keychain generic password items (read and deleted through `keyring`'s
//! apple-native backend, written through security-framework so the item gets a label that
//! reads well in Keychain Access), the Secret Service on Linux (GNOME Keyring, KWallet;
//! `keyring`'s sync D-Bus backend). Other platforms have no keychain here.
//!
//! Every call may block (D-Bus, a macOS permission prompt): only
//! [`super::keychain::Keychain`] calls these, on a helper thread with a timeout. Secrets
//! come back in [`Zeroizing`] buffers, and no error text here ever includes one.

use zeroize::Zeroizing;

/// Why a keychain call failed. The texts never contain a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NativeError {
    /// No keychain service answers (no D-Bus session, no Secret Service, locked).
    Unavailable(String),
    /// The keychain answered with an error.
    Failed(String),
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
fn from_keyring(e: keyring::Error) -> NativeError {
    match e {
        keyring::Error::NoStorageAccess(inner) => NativeError::Unavailable(inner.to_string()),
        // On Linux a missing session bus or Secret Service surfaces as a platform failure.
        #[cfg(target_os = "linux")]
        keyring::Error::PlatformFailure(inner) => NativeError::Unavailable(inner.to_string()),
        #[cfg(not(target_os = "linux"))]
        keyring::Error::PlatformFailure(inner) => NativeError::Failed(inner.to_string()),
        // The payload is the stored secret's bytes: never format it.
        keyring::Error::BadEncoding(_) => {
            NativeError::Failed("the stored key is not UTF-8 text".to_string())
        }
        keyring::Error::Ambiguous(items) => NativeError::Failed(format!(
            "{} keychain items match; remove the duplicates in your keychain app",
            items.len()
        )),
        keyring::Error::NoEntry => NativeError::Failed("no such keychain item".to_string()),
        keyring::Error::TooLong(name, len) => {
            NativeError::Failed(format!("{name} is longer than the keychain allows ({len})"))
        }
        keyring::Error::Invalid(attr, reason) => NativeError::Failed(format!("{attr}: {reason}")),
        _ => NativeError::Failed("unknown keychain error".to_string()),
    }
}

#[cfg(target_os = "linux")]
fn entry(service: &str, account: &str, label: Option<&str>) -> Result<keyring::Entry, NativeError> {
    let mut cred = keyring::secret_service::SsCredential::new_with_target(None, service, account)
        .map_err(from_keyring)?;
    if let Some(label) = label {
        // Shown by Seahorse / KWallet; used only when the item is created.
        cred.label = label.to_string();
    }
    Ok(keyring::Entry::new_with_credential(Box::new(cred)))
}

#[cfg(target_os = "macos")]
fn entry(
    service: &str,
    account: &str,
    _label: Option<&str>,
) -> Result<keyring::Entry, NativeError> {
    keyring::Entry::new(service, account).map_err(from_keyring)
}

/// The secret stored for `account`, or `None` when there is no such item.
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub fn get(service: &str, account: &str) -> Result<Option<Zeroizing<String>>, NativeError> {
    match entry(service, account, None)?.get_password() {
        Ok(secret) => Ok(Some(Zeroizing::new(secret))),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(from_keyring(e)),
    }
}

/// Creates or replaces the item for `account`.
#[cfg(target_os = "linux")]
pub fn set(service: &str, account: &str, label: &str, secret: &str) -> Result<(), NativeError> {
    entry(service, account, Some(label))?
        .set_password(secret)
        .map_err(from_keyring)
}

/// Creates or replaces the item for `account`, with `label` as its name in Keychain Access.
#[cfg(target_os = "macos")]
pub fn set(service: &str, account: &str, label: &str, secret: &str) -> Result<(), NativeError> {
    use security_framework::passwords::{set_generic_password_options, PasswordOptions};
    // errSecItemNotFound: an item for this account exists under another label, so the
    // update (which matches on the label too) found nothing to update.
    const NOT_FOUND: i32 = -25300;
    let options = || {
        let mut o = PasswordOptions::new_generic_password(service, account);
        o.set_label(label);
        o
    };
    let sf_err = |e: security_framework::base::Error| {
        NativeError::Failed(
            e.message()
                .unwrap_or_else(|| format!("OSStatus {}", e.code())),
        )
    };
    match set_generic_password_options(secret.as_bytes(), options()) {
        Ok(()) => Ok(()),
        Err(e) if e.code() == NOT_FOUND => {
            delete(service, account)?;
            set_generic_password_options(secret.as_bytes(), options()).map_err(sf_err)
        }
        Err(e) => Err(sf_err(e)),
    }
}

/// Deletes the item for `account`; false when there was none.
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub fn delete(service: &str, account: &str) -> Result<bool, NativeError> {
    match entry(service, account, None)?.delete_credential() {
        Ok(()) => Ok(true),
        Err(keyring::Error::NoEntry) => Ok(false),
        Err(e) => Err(from_keyring(e)),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn unsupported() -> NativeError {
    NativeError::Unavailable("this platform has no supported keychain".to_string())
}

/// The secret stored for `account` (no keychain on this platform).
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub fn get(_service: &str, _account: &str) -> Result<Option<Zeroizing<String>>, NativeError> {
    Err(unsupported())
}

/// Creates or replaces the item for `account` (no keychain on this platform).
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub fn set(_service: &str, _account: &str, _label: &str, _secret: &str) -> Result<(), NativeError> {
    Err(unsupported())
}

/// Deletes the item for `account` (no keychain on this platform).
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub fn delete(_service: &str, _account: &str) -> Result<bool, NativeError> {
    Err(unsupported())
}
