/* The FMI-version-independent part of an instance: values, checks, stepping, state. Both
   fmi2Functions.c and fmi3Functions.c are thin layers over it. */
#ifndef TWINFORGE_RUNTIME_H
#define TWINFORGE_RUNTIME_H

#include <stddef.h>

#include "model.h"

typedef enum {
    PHASE_INSTANTIATED,
    PHASE_INITIALIZATION,
    PHASE_STEPPING,
    PHASE_TERMINATED,
    PHASE_FAILED /* a step returned Error or Fatal: only reset, free, get are allowed */
} Phase;

struct Instance;
typedef void (*LogFunction)(const struct Instance *instance, ModelStatus status,
                            const char *message);

typedef struct Instance {
    ModelData data;
    char *name;
    Phase phase;
    void *environment; /* the importer's, handed back to log */
    void (*logger)(void); /* the importer's callback, cast back by log */
    LogFunction log;
} Instance;

/* A new instance with the start values, or NULL (logged) on a wrong guid. */
Instance *runtime_instantiate(const char *name, const char *guid, void *environment,
                              void (*logger)(void), LogFunction log);
void runtime_free(Instance *instance);
void runtime_reset(Instance *instance);
ModelStatus runtime_enter_initialization(Instance *instance, double start_time);
ModelStatus runtime_exit_initialization(Instance *instance);

ModelStatus runtime_get_reals(Instance *instance, const unsigned int vr[], size_t n,
                              double values[]);
ModelStatus runtime_set_reals(Instance *instance, const unsigned int vr[], size_t n,
                              const double values[]);
/* For variable types the models do not have: Error unless n is 0. */
ModelStatus runtime_no_variables(Instance *instance, size_t n, const char *function);
ModelStatus runtime_do_step(Instance *instance, double t, double dt);
ModelStatus runtime_unsupported(Instance *instance, const char *function);

ModelStatus runtime_get_state(Instance *instance, void **state);
ModelStatus runtime_set_state(Instance *instance, const void *state);
ModelStatus runtime_free_state(Instance *instance, void **state);
size_t runtime_serialized_size(void);
ModelStatus runtime_serialize(Instance *instance, const void *state, unsigned char out[],
                              size_t size);
ModelStatus runtime_deserialize(Instance *instance, const unsigned char in[], size_t size,
                                void **state);

void runtime_log(const Instance *instance, ModelStatus status, const char *format, ...);

#endif
