/* The interface between one model's physics (model.c) and twinforge's FMI runtime
   (runtime.c, fmi2Functions.c, fmi3Functions.c): a model is a table of real variables,
   indexed by value reference, and two functions over a ModelData. */
#ifndef TWINFORGE_MODEL_H
#define TWINFORGE_MODEL_H

#include <stddef.h>

#define MODEL_MAX_VALUES 64

/* The same codes as fmi2Status and fmi3Status. */
typedef enum {
    MODEL_OK = 0,
    MODEL_WARNING = 1,
    MODEL_DISCARD = 2,
    MODEL_ERROR = 3,
    MODEL_FATAL = 4
} ModelStatus;

typedef enum {
    KIND_PARAMETER, /* tunable: settable at any time */
    KIND_INPUT,     /* settable at any time */
    KIND_OUTPUT,    /* read only */
    KIND_INDEPENDENT, /* read only: the simulation time (FMI 3.0 requires it declared) */
    KIND_INTERNAL   /* part of the state, not in the model description */
} VariableKind;

typedef struct {
    const char *name;
    VariableKind kind;
    double start;
    double min; /* settable values outside [min, max] are rejected */
    double max;
} ModelVariable;

typedef struct {
    const char *guid;
    size_t n_values;
    const ModelVariable *variables; /* n_values entries, index = value reference */
} ModelInfo;

/* The whole state of an instance: plain doubles, so saving it is a copy. */
typedef struct {
    double time;
    double values[MODEL_MAX_VALUES];
} ModelData;

extern const ModelInfo model_info;

/* Called on leaving initialization mode, after parameters and inputs were set: computes
   the outputs and puts every state at its steady state for those values. */
void model_initialize(ModelData *data);

/* Advances the model from t by dt (> 0) with the inputs held; on a status above
   MODEL_WARNING sets *message to why. */
ModelStatus model_step(ModelData *data, double t, double dt, const char **message);

/* The first-order lag of x towards target over dt with time constant tau, exact for
   any dt (stable for any step size). */
double model_lag(double x, double target, double dt, double tau);

#endif
