#ifndef DROVER_CPAM_SHIM_H
#define DROVER_CPAM_SHIM_H
#include <security/pam_appl.h>
#endif
