// NAME
//   openssl_ptr.h - unique_ptr owners for OpenSSL objects: one deleter for all
//
// SYNOPSIS
//   #include "base/openssl_ptr.h"     // from a .cc file or a private header only
//
//   base::SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
//   base::BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
//   base::PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
//   base::OpenSslPtr<BIGNUM, BN_free> serial(BN_new());   // a type without an alias
//
// DESCRIPTION
//   Every OpenSSL object has a free function of its own (SSL_free, EVP_PKEY_free,
//   BIO_free_all...). OpenSslFree<kFree> is the one deleter that calls it, and
//   OpenSslPtr<T, kFree> the unique_ptr that owns a T with it; the aliases below
//   name the objects Volley keeps (TLS sessions and contexts, keys, digests,
//   memory BIOs, certificates). Each folder that talks to OpenSSL (engine/tls,
//   engine/dkim, their tests and fuzz targets) uses these instead of a copy of
//   its own.
//
//   BioPtr frees with BIO_free_all, so a chain goes at once; a BIO handed to an
//   SSL (SSL_set_bio) belongs to the SSL and must be release()d, not kept here.
//
// CONTRACT
//   Header only, and the only part of base/ that names OpenSSL: include it where
//   OpenSSL's own headers may appear (a .cc file or a private header), never
//   from a public header (public headers expose no third-party type). An alias costs nothing until used; the includer links the
//   library whose free function it uses (OpenSSL::Crypto for EVP, BIO, X509 and
//   BN; OpenSSL::SSL for SSL and SSL_CTX). A null pointer is never passed to the
//   free function (unique_ptr does not call a deleter on null).
//
// DIAGNOSTICS
//   None: freeing cannot fail.
#ifndef VOLLEY_BASE_OPENSSL_PTR_H_
#define VOLLEY_BASE_OPENSSL_PTR_H_

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>

namespace volley::base {

// OpenSslFree - the deleter: calls kFree, OpenSSL's free function for the type.
template <auto kFree>
struct OpenSslFree {
  template <typename T>
  void operator()(T* p) const {
    kFree(p);
  }
};

template <typename T, auto kFree>
using OpenSslPtr = std::unique_ptr<T, OpenSslFree<kFree>>;

using SslPtr = OpenSslPtr<SSL, SSL_free>;
using SslCtxPtr = OpenSslPtr<SSL_CTX, SSL_CTX_free>;
using PkeyPtr = OpenSslPtr<EVP_PKEY, EVP_PKEY_free>;
using PkeyCtxPtr = OpenSslPtr<EVP_PKEY_CTX, EVP_PKEY_CTX_free>;
using MdCtxPtr = OpenSslPtr<EVP_MD_CTX, EVP_MD_CTX_free>;
using BioPtr = OpenSslPtr<BIO, BIO_free_all>;
using X509Ptr = OpenSslPtr<X509, X509_free>;
using BignumPtr = OpenSslPtr<BIGNUM, BN_free>;

}  // namespace volley::base

#endif  // VOLLEY_BASE_OPENSSL_PTR_H_
