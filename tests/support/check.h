/* Minimal test assertions: each failure prints file:line and what differed; check_finish()
 * prints "N passed, N failed" and returns the exit code, so a failing test never exits 0. */
#ifndef MTL_TESTS_CHECK_H
#define MTL_TESTS_CHECK_H

#include <math.h>
#include <stdio.h>

extern int check_passed, check_failed;

void check_report(int ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int check_finish(void);

#define CHECK(cond) check_report(!!(cond), __FILE__, __LINE__, "%s", #cond)
#define CHECK_MSG(cond, ...) check_report(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double check_a_ = (double)(a), check_b_ = (double)(b);                                     \
        check_report(fabs(check_a_ - check_b_) <= (tol), __FILE__, __LINE__,                       \
                     "%s = %.9g, expected %s = %.9g (tol %g)", #a, check_a_, #b, check_b_,         \
                     (double)(tol));                                                               \
    } while (0)
#define CHECK_INT(a, b)                                                                            \
    do {                                                                                           \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                            \
        check_report(check_a_ == check_b_, __FILE__, __LINE__, "%s = %lld, expected %lld", #a,     \
                     check_a_, check_b_);                                                          \
    } while (0)
/* A call returning mtl_status must succeed; prints the error message if not. */
#define CHECK_OK(expr, errp)                                                                       \
    do {                                                                                           \
        mtl_status check_s_ = (expr);                                                              \
        check_report(check_s_ == MTL_OK, __FILE__, __LINE__, "%s failed: %s", #expr,               \
                     check_s_ == MTL_OK ? "" : (errp)->message);                                   \
    } while (0)
/* A call must fail with `status` and a message containing `needle`. */
#define CHECK_FAILS(expr, errp, status, needle)                                                    \
    do {                                                                                           \
        mtl_status check_s_ = (expr);                                                              \
        check_report(check_s_ == (status) && strstr((errp)->message, (needle)) != NULL, __FILE__,  \
                     __LINE__, "%s: got %s '%s', expected %s containing '%s'", #expr,              \
                     mtl_status_name(check_s_), (errp)->message, mtl_status_name(status), needle); \
    } while (0)

#endif
