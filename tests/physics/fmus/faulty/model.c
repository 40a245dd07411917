/* A test FMU that fails on purpose: y integrates u until the step that reaches failAt,
   which then fails as failMode says. Built as FMI 2.0 (faulty) and FMI 3.0 (faulty3). */
#include <math.h>
#include <stdlib.h>

#include "model.h"

enum { U, FAIL_AT, FAIL_MODE, Y, TIME, N_VALUES };

static const ModelVariable VARIABLES[N_VALUES] = {
    [U] = {"u", KIND_INPUT, 1, -HUGE_VAL, HUGE_VAL},
    [FAIL_AT] = {"failAt", KIND_PARAMETER, 1e9, -HUGE_VAL, HUGE_VAL},
    [FAIL_MODE] = {"failMode", KIND_PARAMETER, 0, 0, 4},
    [Y] = {"y", KIND_OUTPUT, 0},
    [TIME] = {"time", KIND_INDEPENDENT, 0}, /* declared by the FMI 3.0 description only */
};

const ModelInfo model_info = {"{6f1c2a4e-8d0b-4f5e-9a71-2b3c4d5e6f04}", N_VALUES, VARIABLES};

void model_initialize(ModelData *data) { data->values[Y] = 0.0; }

ModelStatus model_step(ModelData *data, double t, double dt, const char **message) {
    double *v = data->values;
    v[Y] += v[U] * dt;
    if (t + dt < v[FAIL_AT]) {
        return MODEL_OK;
    }
    switch ((int)v[FAIL_MODE]) {
    case 1:
        *message = "failing as asked (failMode 1)";
        return MODEL_ERROR;
    case 2:
        *message = "failing fatally as asked (failMode 2)";
        return MODEL_FATAL;
    case 3:
        v[Y] = NAN;
        return MODEL_OK;
    case 4: {
        volatile int *null = NULL;
        *null = 1; /* crash the process: the host must survive this in another process */
        return MODEL_FATAL;
    }
    default:
        return MODEL_OK;
    }
}
