// HMAC-SHA256 (RFC 2104) with the key's padded blocks hashed once: OpenSSL 3's one-shot HMAC()
// looks the algorithm up and sets the key up again on every call, several times the hashing
// itself (docs/BENCHMARKS.md), and every request between two nodes is signed and verified.
// The low-level SHA-256 calls are deprecated in OpenSSL 3 only in favour of the EVP interface,
// whose per-call set-up is what this avoids.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "drover_shims.h"
#include <openssl/sha.h>
#include <string.h>

typedef struct {
    SHA256_CTX inner;
    SHA256_CTX outer;
} drover_hmac_state;

_Static_assert(sizeof(drover_hmac_state) <= sizeof(((drover_hmac_sha256_key *)0)->state),
               "drover_hmac_sha256_key is too small for two SHA256_CTX");

void drover_hmac_sha256_prepare(drover_hmac_sha256_key *prepared, const unsigned char *key, size_t length) {
    drover_hmac_state *state = (drover_hmac_state *)prepared->state;
    unsigned char block[SHA256_CBLOCK] = {0};
    if (length > SHA256_CBLOCK) {
        SHA256(key, length, block);
    } else if (length > 0) {
        memcpy(block, key, length);
    }
    unsigned char pad[SHA256_CBLOCK];
    for (int i = 0; i < SHA256_CBLOCK; i++) pad[i] = block[i] ^ 0x36;
    SHA256_Init(&state->inner);
    SHA256_Update(&state->inner, pad, sizeof pad);
    for (int i = 0; i < SHA256_CBLOCK; i++) pad[i] = block[i] ^ 0x5c;
    SHA256_Init(&state->outer);
    SHA256_Update(&state->outer, pad, sizeof pad);
}

void drover_hmac_sha256(const drover_hmac_sha256_key *prepared, const unsigned char *message, size_t length,
                        unsigned char out[32]) {
    const drover_hmac_state *state = (const drover_hmac_state *)prepared->state;
    SHA256_CTX context = state->inner;
    unsigned char inner[SHA256_DIGEST_LENGTH];
    SHA256_Update(&context, message, length);
    SHA256_Final(inner, &context);
    context = state->outer;
    SHA256_Update(&context, inner, sizeof inner);
    SHA256_Final(out, &context);
}

void drover_sha256(const unsigned char *data, size_t length, unsigned char out[32]) {
    SHA256_CTX context;
    SHA256_Init(&context);
    SHA256_Update(&context, data, length);
    SHA256_Final(out, &context);
}
