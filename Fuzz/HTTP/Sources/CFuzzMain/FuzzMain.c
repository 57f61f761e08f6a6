// SwiftPM links an executable target on Linux with `--defsym main=<Target>_main`, a symbol a
// `-parse-as-library` module never emits, so libFuzzer's own main cannot be used. This is
// that entry point: it hands over to libFuzzer's driver with the Swift test function.
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

int FuzzHTTP_main(int argc, char **argv) {
    return LLVMFuzzerRunDriver(&argc, &argv, LLVMFuzzerTestOneInput);
}

// The same for the FuzzResponse, FuzzRequest and FuzzCookieAndSignature targets (each executable defines its own test function).
int FuzzResponse_main(int argc, char **argv) {
    return LLVMFuzzerRunDriver(&argc, &argv, LLVMFuzzerTestOneInput);
}

int FuzzRequest_main(int argc, char **argv) {
    return LLVMFuzzerRunDriver(&argc, &argv, LLVMFuzzerTestOneInput);
}

int FuzzCookieAndSignature_main(int argc, char **argv) {
    return LLVMFuzzerRunDriver(&argc, &argv, LLVMFuzzerTestOneInput);
}
