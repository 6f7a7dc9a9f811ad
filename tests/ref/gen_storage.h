/* SPDX-License-Identifier: MIT */
/*
 * gen_storage_cases, the generator of tests/data/golden_storage (see gen_storage_cases.c):
 * gen_storage_model.c holds the storage models (rounding, stochastic rounding's Philox bits,
 * bitsandbytes' 8-bit map and quantization, the float64 reference and the float32 model of
 * a step), gen_storage_cases.c the cases, their inputs, the tolerances and the files.
 */
#ifndef CLOPT_GEN_STORAGE_H
#define CLOPT_GEN_STORAGE_H

#include "ref.h"

#include <stddef.h>
#include <stdint.h>

#define GEN_QBLOCK 256 /* elements per absmax of 8-bit state */
/* AMP cases: the rule's gradients are 2^-GEN_AMP_SHIFT smaller (SGD's lr 2^GEN_AMP_SHIFT
   larger), and are stored multiplied by the case's grad_scale. */
#define GEN_AMP_SHIFT 8

/* One case: rule, storage, shape, steps and the seed of its inputs. */
typedef struct spec {
    const char *name, *optimizer;
    clopt_rule rule;
    clopt_dtype param, grad, state;
    clopt_master master;
    int sr;
    uint64_t sr_seed;
    uint32_t sr_stream;
    double grad_scale; /* 0: none (no AMP) */
    size_t rows, cols;
    unsigned steps;
    uint64_t seed;
} spec;

/* The stored tensors of one model of a case: every value exactly representable in its
   storage type. */
typedef struct model {
    size_t n, nstate;
    double *theta;                    /* θ in its storage type */
    double *master;                   /* CLOPT_MASTER_F32: the float32 master */
    uint16_t *rem;                    /* CLOPT_MASTER_REMAINDER: the remainder words */
    double *state[CLOPT_MAX_STATE];   /* float32 / bfloat16 state */
    uint8_t *code[CLOPT_MAX_STATE];   /* uint8 state: the codes */
    float *absmax[CLOPT_MAX_STATE];   /*              and the absmax of each block */
    int sgn[CLOPT_MAX_STATE];         /* the signed map */
} model;

/* Self-checks: Philox's known answers, the 8-bit maps against clopt_q8_map (prints what it
   finds). Return 0, or -1 after printing the failure. */
int gen_check_philox(void);
int gen_check_maps(void);

/* Rounding of an exact value to a storage type: to nearest even (F32, F16, BF16). */
double gen_round(double x, clopt_dtype t);
/* The 16-bit word of a value exactly representable in t (F16, BF16). */
uint16_t gen_word16(double x, clopt_dtype t);

/* Hyperparameters (float32-exact), scales of θ_0 and of the gradients, the update rule as
   text. */
void gen_hyper(clopt_rule rule, clopt_hparams *hp);
void gen_scales(clopt_rule rule, double *pscale, double *gscale);
const char *gen_equations(clopt_rule rule);

/* A model from θ_0 (θ's storage values): masters from θ_0, states at 0. */
void gen_model_init(model *md, const spec *s, const clopt_hparams *hp, const double *theta0);
void gen_model_free(model *md);
/* Step t with the stored gradients grad (the float64 reference, or float32 = 1 the float32
   model). Returns the number of Lion momenta too close to 0 (reference only). */
size_t gen_model_step(model *md, const spec *s, const clopt_hparams *hp, uint64_t t,
                      const double *grad, int float32);

#endif /* CLOPT_GEN_STORAGE_H */
