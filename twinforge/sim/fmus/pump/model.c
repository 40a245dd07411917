/* A centrifugal pump on a valve, driven by an induction motor: flow and pressure where
   the pump curve meets the valve's system curve, power through the efficiencies, and the
   winding and bearing temperatures as first-order lags. */
#include <math.h>

#include "model.h"

enum {
    SPEED, VALVE, RATED_SPEED, SHUTOFF_PRESSURE, CURVE_COEFFICIENT, VALVE_KV,
    PUMP_EFFICIENCY, MOTOR_EFFICIENCY, VOLTAGE, POWER_FACTOR, BEARING_WEAR, FOULING,
    AMBIENT, TAU_WINDING, TAU_BEARING,
    FLOW, HEAD, PRESSURE, SHAFT_POWER, ELECTRIC_POWER, CURRENT, WINDING_T, BEARING_T,
    VIBRATION, N_VALUES
};

static const ModelVariable VARIABLES[N_VALUES] = {
    [SPEED] = {"speed", KIND_INPUT, 2900, 0, 6000},
    [VALVE] = {"valvePosition", KIND_INPUT, 1, 0, 1},
    [RATED_SPEED] = {"ratedSpeed", KIND_PARAMETER, 2900, 1, 1e5},
    [SHUTOFF_PRESSURE] = {"shutoffPressure", KIND_PARAMETER, 6, 0, 1e3},
    [CURVE_COEFFICIENT] = {"curveCoefficient", KIND_PARAMETER, 1.2e-3, 1e-9, 1e3},
    [VALVE_KV] = {"valveKv", KIND_PARAMETER, 19.8, 1e-6, 1e6},
    [PUMP_EFFICIENCY] = {"pumpEfficiency", KIND_PARAMETER, 0.65, 0.01, 1},
    [MOTOR_EFFICIENCY] = {"motorEfficiency", KIND_PARAMETER, 0.92, 0.01, 1},
    [VOLTAGE] = {"voltage", KIND_PARAMETER, 400, 1, 1e5},
    [POWER_FACTOR] = {"powerFactor", KIND_PARAMETER, 0.86, 0.01, 1},
    [BEARING_WEAR] = {"bearingWear", KIND_PARAMETER, 0, 0, 1},
    [FOULING] = {"fouling", KIND_PARAMETER, 0, 0, 1},
    [AMBIENT] = {"ambientTemperature", KIND_PARAMETER, 25, -50, 100},
    [TAU_WINDING] = {"tauWinding", KIND_PARAMETER, 900, 0, 1e6},
    [TAU_BEARING] = {"tauBearing", KIND_PARAMETER, 1200, 0, 1e6},
    [FLOW] = {"flow", KIND_OUTPUT, 40},
    [HEAD] = {"head", KIND_OUTPUT, 41.6},
    [PRESSURE] = {"pressure", KIND_OUTPUT, 4.08},
    [SHAFT_POWER] = {"shaftPower", KIND_OUTPUT, 6.97},
    [ELECTRIC_POWER] = {"electricPower", KIND_OUTPUT, 7.58},
    [CURRENT] = {"motorCurrent", KIND_OUTPUT, 12.7},
    [WINDING_T] = {"windingTemperature", KIND_OUTPUT, 67.9},
    [BEARING_T] = {"bearingTemperature", KIND_OUTPUT, 40},
    [VIBRATION] = {"vibration", KIND_OUTPUT, 1.1},
};

const ModelInfo model_info = {"{6f1c2a4e-8d0b-4f5e-9a71-2b3c4d5e6f01}", N_VALUES, VARIABLES};

#define BAR_PER_M_WATER (1000.0 * 9.80665 / 1e5)
#define FRICTION_KW 1.5   /* bearing friction at rated speed and full wear */
#define RATED_CURRENT 13.0 /* A: the winding rises 45 K above ambient at this current */

static void compute_outputs(double *v) {
    double n = v[SPEED] / v[RATED_SPEED];
    double a = v[CURVE_COEFFICIENT] * (1.0 + 2.0 * v[FOULING]);
    double kv = v[VALVE_KV] * v[VALVE];
    double q = 0.0, p, hydraulic;
    p = v[SHUTOFF_PRESSURE] * n * n;
    if (n > 0.0 && kv > 0.0) {
        q = n * sqrt(v[SHUTOFF_PRESSURE] / (a + 1.0 / (kv * kv)));
        p = (q / kv) * (q / kv);
    }
    hydraulic = q / 3600.0 * p * 1e5 / 1000.0;
    v[FLOW] = q;
    v[PRESSURE] = p;
    v[HEAD] = p / BAR_PER_M_WATER;
    v[SHAFT_POWER] = hydraulic / v[PUMP_EFFICIENCY] + v[BEARING_WEAR] * FRICTION_KW * n;
    v[ELECTRIC_POWER] = v[SHAFT_POWER] / v[MOTOR_EFFICIENCY];
    v[CURRENT] = v[ELECTRIC_POWER] * 1000.0 / (sqrt(3.0) * v[VOLTAGE] * v[POWER_FACTOR]);
    v[VIBRATION] = 0.1 + 1.0 * n + 20.0 * v[BEARING_WEAR];
}

static double winding_target(const double *v) {
    double i = v[CURRENT] / RATED_CURRENT;
    return v[AMBIENT] + 45.0 * i * i;
}

static double bearing_target(const double *v) {
    return v[AMBIENT] + 15.0 * v[SPEED] / v[RATED_SPEED] + 40.0 * v[BEARING_WEAR];
}

void model_initialize(ModelData *data) {
    double *v = data->values;
    compute_outputs(v);
    v[WINDING_T] = winding_target(v);
    v[BEARING_T] = bearing_target(v);
}

ModelStatus model_step(ModelData *data, double t, double dt, const char **message) {
    double *v = data->values;
    (void)t;
    (void)message;
    compute_outputs(v);
    v[WINDING_T] = model_lag(v[WINDING_T], winding_target(v), dt, v[TAU_WINDING]);
    v[BEARING_T] = model_lag(v[BEARING_T], bearing_target(v), dt, v[TAU_BEARING]);
    return MODEL_OK;
}
