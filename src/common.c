/* common.c — error message, rank-tagged logging, fatal exit through MPI_Abort, aligned memory,
 * token counts with suffixes, the checks on output paths, and the rank's thread count. Exercised
 * by every test; okv_die's MPI path by the multi-rank fault test, counts by test_config, outputs
 * by test_trust_inputs.sh, the thread count by tests/e2e/test_day_one.sh. */
#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <mpi.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char err_buf[1024];
static int log_rank = 0;
static int node_ranks = 1;
static okv_log_level log_level = OKV_LOG_INFO;

okv_status okv_fail(okv_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return st;
}

void okv_error_prefix(const char *fmt, ...) {
    char pre[512], old[sizeof err_buf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, err_buf, sizeof old);
    size_t n = strlen(pre);
    if (n > sizeof err_buf - 3) n = sizeof err_buf - 3;
    memcpy(err_buf, pre, n);
    memcpy(err_buf + n, ": ", 2);
    size_t room = sizeof err_buf - n - 3;
    size_t m = strnlen(old, room);
    memcpy(err_buf + n + 2, old, m);
    err_buf[n + 2 + m] = 0;
}

const char *okv_last_error(void) { return err_buf[0] ? err_buf : "unknown error"; }
void okv_clear_error(void) { err_buf[0] = 0; }

void okv_log_init(int rank) {
    log_rank = rank;
    const char *lv = getenv("OMNIKV_LOG");
    if (!lv) return;
    if (!strcmp(lv, "debug")) log_level = OKV_LOG_DEBUG;
    else if (!strcmp(lv, "info")) log_level = OKV_LOG_INFO;
    else if (!strcmp(lv, "warn")) log_level = OKV_LOG_WARN;
    else if (!strcmp(lv, "error")) log_level = OKV_LOG_ERROR;
}

int okv_log_rank(void) { return log_rank; }

void okv_log(okv_log_level lvl, const char *fmt, ...) {
    if (lvl < log_level) return;
    char line[2048];
    int n = snprintf(line, sizeof line, "[r%d] ", log_rank);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = strlen(line);
    if (len && line[len - 1] != '\n' && len + 1 < sizeof line) {
        line[len++] = '\n';
        line[len] = 0;
    }
    fputs(line, stderr);
}

_Noreturn void okv_die(const char *file, int line, const char *what) {
    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    fprintf(stderr, "[r%d] %s:%d on %s: %s\n", log_rank, file, line, host, what);
    fflush(stderr);
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (inited && !finalized) MPI_Abort(MPI_COMM_WORLD, OKV_ERR_INTERNAL);
    abort();
}

_Noreturn void okv_die_mpi(const char *file, int line, const char *what, int mpi_rc) {
    char msg[MPI_MAX_ERROR_STRING + 512], err[MPI_MAX_ERROR_STRING] = "?";
    int len = 0;
    MPI_Error_string(mpi_rc, err, &len);
    snprintf(msg, sizeof msg, "%s failed: %s", what, err);
    okv_die(file, line, msg);
}

void *okv_alloc(size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    if (posix_memalign(&p, 64, (bytes + 63) & ~(size_t)63) != 0) return NULL;
    memset(p, 0, bytes);
    return p;
}

void okv_free_mem(void *p) { free(p); }

void okv_node_init(void) {
    MPI_Comm node;
    CHECK_MPI(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    CHECK_MPI(MPI_Comm_size(node, &node_ranks));
    CHECK_MPI(MPI_Comm_free(&node));
}

int okv_threads_resolve(int given, const char *given_by) {
    int n = given;
    char why[160];
    snprintf(why, sizeof why, "from %s", given_by && *given_by ? given_by : "the run config");
    const char *omp = getenv("OMP_NUM_THREADS");
    if (n <= 0 && omp && *omp) {
        /* A nested list ("4,2") gives the outer level's count. */
        char *end;
        errno = 0;
        long x = strtol(omp, &end, 10);
        if (!errno && x >= 1 && x <= 1 << 16 && (*end == 0 || *end == ',')) {
            n = (int)x;
            snprintf(why, sizeof why, "from OMP_NUM_THREADS");
        } else {
            OKV_WARN("OMP_NUM_THREADS='%s' is not a thread count; using the cores instead", omp);
        }
    }
    if (n <= 0) {
        cpu_set_t set;
        const long online = sysconf(_SC_NPROCESSORS_ONLN);
        const int granted = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set)
                                                                        : (int)OKV_MAX(online, 1);
        if (granted < online || node_ranks == 1) {
            n = granted;
            snprintf(why, sizeof why, "the %d core(s) this process may run on", granted);
        } else {
            /* Unbound ranks on one node would otherwise each start a thread per core. */
            n = OKV_MAX(1, granted / node_ranks);
            snprintf(why, sizeof why, "the node's %d cores shared by its %d ranks", granted,
                     node_ranks);
        }
    }
    OKV_INFO("threads %d (%s)", n, why);
    return n;
}

double okv_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *file_kind(mode_t m) {
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    if (S_ISFIFO(m)) return "a FIFO";
    return "not a regular file";
}

int okv_output_check(const char *path, const char *what, bool stream_ok) {
    struct stat sb;
    if (stat(path, &sb) == 0) {
        if (S_ISDIR(sb.st_mode))
            return okv_fail(OKV_ERR_USAGE, "%s '%s' is a directory; give a file path", what, path);
        if (S_ISFIFO(sb.st_mode) && stream_ok) return OKV_OK;
        if (!S_ISREG(sb.st_mode))
            return okv_fail(OKV_ERR_USAGE, "%s '%s' is %s, which omnikv does not write; give a "
                            "regular file%s", what, path, file_kind(sb.st_mode),
                            stream_ok ? ", a FIFO or /dev/stdout" : "");
        /* Opening without O_TRUNC proves the file writable and leaves it as it is. */
        int fd = open(path, O_WRONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
            return okv_fail(OKV_ERR_INPUT, "cannot write %s '%s': %s", what, path, strerror(errno));
        close(fd);
        return OKV_OK;
    }
    if (errno == ELOOP)
        return okv_fail(OKV_ERR_USAGE, "%s '%s' is a loop of symbolic links; point it at a file",
                        what, path);
    if (errno != ENOENT)
        return okv_fail(OKV_ERR_INPUT, "cannot use %s '%s': %s", what, path, strerror(errno));
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = 0;
    else *slash = 0;
    if (access(dir, W_OK | X_OK) != 0)
        return okv_fail(OKV_ERR_INPUT, "cannot create %s '%s': directory '%s': %s", what, path, dir,
                        strerror(errno));
    return OKV_OK;
}

bool okv_link_target(const char *path, char *out, size_t cap) {
    if (strlen(path) >= cap) return false;
    snprintf(out, cap, "%s", path);
    for (int hops = 0; hops < 40; hops++) {
        char target[4096];
        ssize_t n = readlink(out, target, sizeof target - 1);
        if (n < 0) return errno == EINVAL || errno == ENOENT; /* not a link, or nothing there */
        target[n] = 0;
        char *slash = strrchr(out, '/');
        if (target[0] == '/' || !slash) {
            if ((size_t)n >= cap) return false;
            snprintf(out, cap, "%s", target);
        } else {
            size_t dir = (size_t)(slash - out) + 1;
            if (dir + (size_t)n >= cap) return false;
            memcpy(out + dir, target, (size_t)n + 1);
        }
    }
    return false;
}

bool okv_parse_count(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    if (!isdigit((unsigned char)*s)) return false;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno) return false;
    int shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: break;
    }
    if (*end || x > (unsigned long long)INT64_MAX >> shift) return false;
    int64_t v = (int64_t)(x << shift);
    if (v < lo || v > hi) return false;
    *out = v;
    return true;
}

uint64_t okv_meminfo_bytes(const char *field) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    size_t n = strlen(field);
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':' && sscanf(line + n + 1, " %llu kB", &kb) == 1) break;
    fclose(f);
    return (uint64_t)kb * 1024;
}
