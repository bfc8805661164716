/*
 * Test task "old": a library built for task ABI 1 (the symbol rtc_task_v1,
 * abi_version 1). The v1 struct is not declared any more; its leading fields
 * are enough for the loader to recognise it, and it must be refused before
 * anything else of it is read.
 */
#include <stdint.h>

typedef struct rtc_task_v1_head {
    uint32_t abi_version;
    uint32_t state_size;
    const char *name;
} rtc_task_v1_head;

const rtc_task_v1_head rtc_task_v1 = {
    .abi_version = 1,
    .state_size = sizeof(uint64_t),
    .name = "old",
};
