/* A CNC machining spindle: power from load, temperature as a first-order lag to the
   heat it makes and its coolant removes, vibration from speed and bearing wear. */
#include "model.h"

enum {
    SPINDLE_SPEED, SPINDLE_LOAD, MAX_SPEED, BEARING_WEAR, COOLANT_FAILURE, AMBIENT, TAU_THERMAL,
    POWER, SPINDLE_T, VIBRATION, N_VALUES
};

static const ModelVariable VARIABLES[N_VALUES] = {
    [SPINDLE_SPEED] = {"spindleSpeed", KIND_INPUT, 12000, 0, 60000},
    [SPINDLE_LOAD] = {"spindleLoad", KIND_INPUT, 0.5, 0, 1},
    [MAX_SPEED] = {"maxSpeed", KIND_PARAMETER, 24000, 1, 1e6},
    [BEARING_WEAR] = {"bearingWear", KIND_PARAMETER, 0, 0, 1},
    [COOLANT_FAILURE] = {"coolantFailure", KIND_PARAMETER, 0, 0, 1},
    [AMBIENT] = {"ambientTemperature", KIND_PARAMETER, 24, -50, 100},
    [TAU_THERMAL] = {"tauThermal", KIND_PARAMETER, 40, 0, 1e6},
    [POWER] = {"power", KIND_OUTPUT, 12.8},
    [SPINDLE_T] = {"spindleTemperature", KIND_OUTPUT, 43},
    [VIBRATION] = {"vibration", KIND_OUTPUT, 1.4},
};

const ModelInfo model_info = {"{6f1c2a4e-8d0b-4f5e-9a71-2b3c4d5e6f03}", N_VALUES, VARIABLES};

#define IDLE_KW 0.8   /* controls, coolant pump, lubrication */
#define DRIVE_KW 2.0  /* spindle drive losses while turning */
#define CUT_KW 20.0   /* cutting power at full load */

static void compute_outputs(double *v) {
    int running = v[SPINDLE_SPEED] > 0.0;
    v[POWER] = IDLE_KW + (running ? DRIVE_KW + CUT_KW * v[SPINDLE_LOAD] : 0.0);
    v[VIBRATION] = 0.3 + 2.2 * v[SPINDLE_SPEED] / v[MAX_SPEED] + 25.0 * v[BEARING_WEAR];
}

/* A standing spindle makes no heat: it settles at ambient. */
static double temperature_target(const double *v) {
    if (!(v[SPINDLE_SPEED] > 0.0)) {
        return v[AMBIENT];
    }
    return v[AMBIENT] + 38.0 * v[SPINDLE_LOAD] + 15.0 * v[BEARING_WEAR] +
           90.0 * v[COOLANT_FAILURE];
}

void model_initialize(ModelData *data) {
    double *v = data->values;
    compute_outputs(v);
    v[SPINDLE_T] = temperature_target(v);
}

ModelStatus model_step(ModelData *data, double t, double dt, const char **message) {
    double *v = data->values;
    (void)t;
    (void)message;
    compute_outputs(v);
    v[SPINDLE_T] = model_lag(v[SPINDLE_T], temperature_target(v), dt, v[TAU_THERMAL]);
    return MODEL_OK;
}
