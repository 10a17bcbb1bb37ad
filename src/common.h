/* common.h — status codes, the thread-local error message, logging with rank tags, the
 * always-on assertion and checked-call macros every module uses, and the count and output-path
 * helpers every command shares. Exercised by every test. */
#ifndef OKV_COMMON_H
#define OKV_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* C++ (the CUDA backend's .cu files) sees the same C declarations. */
#ifdef __cplusplus
#define OKV_NORETURN [[noreturn]]
extern "C" {
#else
#define OKV_NORETURN _Noreturn
#endif

/* Status returned by every fallible call; the values double as the process exit codes of
 * DESIGN §8 (0 served, 1 some error records, 2 usage/config, 3 model or input file). */
typedef enum okv_status {
    OKV_OK = 0,
    OKV_ERR_REQUEST = 1,  /* one request could not be served (becomes an error record) */
    OKV_ERR_USAGE = 2,    /* bad flag or run-config value */
    OKV_ERR_INPUT = 3,    /* bad or unreadable model / input file */
    OKV_ERR_NOMEM = 4,    /* an allocation the user can size down failed */
    OKV_ERR_INTERNAL = 5,
} okv_status;

/* One sentence describing the last user-visible failure on this thread: what was wrong, with the
 * offending value, and what to do. Set by the function that detects the problem; callers that
 * add context use okv_error_prefix. */
okv_status okv_fail(okv_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void okv_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *okv_last_error(void);
void okv_clear_error(void);

typedef enum okv_log_level {
    OKV_LOG_DEBUG = 0,
    OKV_LOG_INFO = 1,
    OKV_LOG_WARN = 2,
    OKV_LOG_ERROR = 3,
} okv_log_level;

/* Logging goes to stderr with a "[rN] " prefix. The level comes from OMNIKV_LOG. */
void okv_log_init(int rank);
int okv_log_rank(void);
void okv_log(okv_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define OKV_DEBUG(...) okv_log(OKV_LOG_DEBUG, __VA_ARGS__)
#define OKV_INFO(...) okv_log(OKV_LOG_INFO, __VA_ARGS__)
#define OKV_WARN(...) okv_log(OKV_LOG_WARN, __VA_ARGS__)
#define OKV_ERROR(...) okv_log(OKV_LOG_ERROR, __VA_ARGS__)

/* A broken invariant: print file:line, rank, host and expression, then abort every rank. */
OKV_NORETURN void okv_die(const char *file, int line, const char *what);
#define OKV_ASSERT(cond) \
    do { \
        if (!(cond)) okv_die(__FILE__, __LINE__, "assertion failed: " #cond); \
    } while (0)
#define CHECK_SYS(expr) \
    do { \
        if ((expr) < 0) okv_die(__FILE__, __LINE__, #expr); \
    } while (0)
/* An MPI call that must succeed (used where <mpi.h> is included): the message adds MPI's own
 * error string. */
OKV_NORETURN void okv_die_mpi(const char *file, int line, const char *what, int mpi_rc);
#define CHECK_MPI(expr) \
    do { \
        int mpi_rc_ = (expr); \
        if (mpi_rc_ != MPI_SUCCESS) okv_die_mpi(__FILE__, __LINE__, #expr, mpi_rc_); \
    } while (0)

/* Whether path can take an output (`what` names it in the message) without harm, checked before
 * anything is written: nothing is created or truncated here. A regular file must be writable,
 * a new file's directory must exist and be writable; a FIFO passes when stream_ok; directories
 * and other non-regular files are refused (OKV_ERR_USAGE), as is a symlink loop. A path through
 * a symlink is checked at its target, which is what gets written. */
int okv_output_check(const char *path, const char *what, bool stream_ok);

/* The path a write to `path` lands on: symbolic links followed one by one (the last target may
 * not exist yet), relative targets taken from their link's directory. False for a loop or a
 * result longer than cap. */
bool okv_link_target(const char *path, char *out, size_t cap);

/* Allocation helpers: aligned (64 B) and zeroed; NULL on failure (the caller reports sizes). */
void *okv_alloc(size_t bytes);
void okv_free_mem(void *p);

/* Learns how many ranks of MPI_COMM_WORLD share this node (collective; main calls it once). */
void okv_node_init(void);
/* The compute threads of this rank: `given` when > 0 (set by `given_by`, such as "-t"), else
 * OMP_NUM_THREADS, else the cores this process may run on (its affinity mask, which a Slurm or
 * mpirun binding narrows), divided among the node's ranks when no binding narrowed the mask.
 * Logs the choice and its source once; the result is >= 1. */
int okv_threads_resolve(int given, const char *given_by);

double okv_now_s(void); /* monotonic clock in seconds */

/* A token count as people write it: decimal digits, optionally followed by K, M or G (powers of
 * 1024, either case: 16K = 16384, 1M = 1048576). True when s is one and lies in [lo, hi]. */
bool okv_parse_count(const char *s, int64_t lo, int64_t hi, int64_t *out);
/* A /proc/meminfo field in bytes ("MemTotal", "MemAvailable"); 0 when unknown. */
uint64_t okv_meminfo_bytes(const char *field);

/* SplitMix64: the next value of the stream whose state is *x (sampler seeding, synthetic fill). */
static inline uint64_t okv_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Half/bfloat16 scalar conversions (round-to-nearest-even), shared by loaders and kernels. */
static inline float okv_fp16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 1;
            while (!(man & 0x400u)) {
                man <<= 1;
                exp--;
            }
            man &= 0x3ffu;
            bits = sign | ((exp + 112u) << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    }
    union { uint32_t u; float f; } cv = {.u = bits};
    return cv.f;
}

static inline uint16_t okv_f32_to_fp16(float f) {
    union { float f; uint32_t u; } cv = {.f = f};
    uint32_t x = cv.u;
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) return (uint16_t)(sign | 0x7e00u); /* NaN */
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* overflow -> inf */
    if (absx < 0x38800000u) { /* subnormal or zero in half */
        if (absx < 0x33000000u) return (uint16_t)sign;
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* 14 + (113 - e) - 1 */
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t mid = 1u << (shift - 1u);
        if (rem > mid || (rem == mid && (half & 1u))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t r = absx + 0xfffu + ((absx >> 13) & 1u); /* round to nearest even */
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

static inline float okv_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } cv = {.u = (uint32_t)h << 16};
    return cv.f;
}

static inline uint16_t okv_f32_to_bf16(float f) {
    union { float f; uint32_t u; } cv = {.f = f};
    if ((cv.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((cv.u >> 16) | 64u); /* quiet NaN */
    return (uint16_t)((cv.u + 0x7fffu + ((cv.u >> 16) & 1u)) >> 16);
}

#define OKV_MIN(a, b) ((a) < (b) ? (a) : (b))
#define OKV_MAX(a, b) ((a) > (b) ? (a) : (b))

#ifdef __cplusplus
}
#endif

#endif
