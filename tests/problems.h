/*
 * problems.h - the closures of the L-BFGS fixtures (tests/fixtures/lbfgs/
 * README.md, "Problems"): N-D Rosenbrock and L2-regularised logistic
 * regression on 200 digits.  Each computes in double with the README's
 * loops and rounds the loss and gradient to float32 once, so it reproduces
 * torch's recorded calls bit for bit.  Plain C11: usable outside cmocka.
 */
#ifndef T_PROBLEMS_H
#define T_PROBLEMS_H

#include <stdint.h>

#define T_PROBLEM_MAXT 2

typedef struct t_problem {
    char name[16];
    int ntensors;
    int64_t sizes[T_PROBLEM_MAXT];
    int64_t n;                         /* sum of sizes */
    float *params[T_PROBLEM_MAXT];     /* 64-byte aligned, separate buffers */
    float *grads[T_PROBLEM_MAXT];
    int64_t calls;                     /* closure calls so far */
    int64_t fail_at;                   /* call number that fails (0: none) */
    /* private */
    double *xd, *gd;                   /* n doubles each */
    double *X, *y, *r;                 /* logreg: 200 x 64, 200, 200 */
    int nsamples, nfeatures;
} t_problem;

/* name: "rosen2", "rosen100" or "logreg"; source_dir: the repository root
 * (logreg reads source_dir/data/digits.bin).  Sets the start point.
 * Returns 0, or -1 (unknown name, unreadable data, out of memory). */
int t_problem_init(t_problem *p, const char *name, const char *source_dir);
/* puts the parameters back at the problem's start point; zeroes grads */
void t_problem_reset(t_problem *p);
/* a jopt_closure: user_data is the t_problem.  Counts the call; the call
 * numbered fail_at returns 1 without touching anything. */
int t_problem_closure(void *user_data, double *loss);
/* the loss and gradient at the current parameters, without counting */
void t_problem_eval(t_problem *p, double *loss);
/* the loss at the current parameters (t_problem_eval's), and
 * max_k |x_k - 1|, the distance to Rosenbrock's minimum */
double t_problem_loss(t_problem *p);
double t_problem_dist_to_one(const t_problem *p);
/* flat copies of the parameters / gradients (n floats) */
void t_problem_get_x(const t_problem *p, float *out);
void t_problem_set_x(t_problem *p, const float *in);
void t_problem_get_g(const t_problem *p, float *out);
void t_problem_free(t_problem *p);

#endif
