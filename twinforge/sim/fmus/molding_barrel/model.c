/* An injection molding barrel: three heated zones, each a thermal mass with a PI
   temperature controller, loss to ambient and shear heating from the screw; zone 1's
   heater can lose capacity, and the main heater contactor can weld shut (every zone on). */
#include <math.h>

#include "model.h"

enum {
    SETPOINT, SCREW_SPEED, CYCLE_TIME, HEATER_FAILURE, HEATER_STUCK_ON, AMBIENT,
    ZONE_CAPACITY, HEATER_MAX_POWER,
    ZONE1_T, ZONE2_T, ZONE3_T, BARREL_T, MELT_T, HEATER_POWER,
    INTEGRAL1, INTEGRAL2, INTEGRAL3, /* the controllers' integral terms, W */
    N_VALUES
};

#define N_ZONES 3

static const ModelVariable VARIABLES[N_VALUES] = {
    [SETPOINT] = {"barrelSetpoint", KIND_INPUT, 220, 0, 450},
    [SCREW_SPEED] = {"screwSpeed", KIND_INPUT, 120, 0, 500},
    [CYCLE_TIME] = {"cycleTime", KIND_INPUT, 28, 1, 3600},
    [HEATER_FAILURE] = {"heaterFailure", KIND_PARAMETER, 0, 0, 1},
    [HEATER_STUCK_ON] = {"heaterStuckOn", KIND_PARAMETER, 0, 0, 1},
    [AMBIENT] = {"ambientTemperature", KIND_PARAMETER, 25, -50, 100},
    [ZONE_CAPACITY] = {"zoneCapacity", KIND_PARAMETER, 10000, 1000, 1e7},
    [HEATER_MAX_POWER] = {"heaterMaxPower", KIND_PARAMETER, 8, 0, 100},
    [ZONE1_T] = {"zone1Temperature", KIND_OUTPUT, 220},
    [ZONE2_T] = {"zone2Temperature", KIND_OUTPUT, 220},
    [ZONE3_T] = {"zone3Temperature", KIND_OUTPUT, 220},
    [BARREL_T] = {"barrelTemperature", KIND_OUTPUT, 220},
    [MELT_T] = {"meltTemperature", KIND_OUTPUT, 230},
    [HEATER_POWER] = {"heaterPower", KIND_OUTPUT, 12},
    [INTEGRAL1] = {"integral1", KIND_INTERNAL, 0},
    [INTEGRAL2] = {"integral2", KIND_INTERNAL, 0},
    [INTEGRAL3] = {"integral3", KIND_INTERNAL, 0},
};

const ModelInfo model_info = {"{6f1c2a4e-8d0b-4f5e-9a71-2b3c4d5e6f02}", N_VALUES, VARIABLES};

#define LOSS_W_PER_K 22.0 /* each zone's conductance to ambient */
/* Gains for a closed-loop time constant of about 60 s at the nominal 10 kJ/K; the
   integral's zero nearly cancels its slow pole, so the response is close to first order. */
#define KP_W_PER_K 160.0
#define TI_S 600.0
#define SUBSTEP_S 0.5 /* explicit integration, well inside its stability limit */
#define NOMINAL_SPEED 120.0
#define MELT_RISE_K 10.0 /* shear rise of the melt over the barrel at 120 rpm, 28 s */

/* Shear heating per zone at the nominal speed, W; it grows towards the nozzle. */
static const double SHEAR_W[N_ZONES] = {200.0, 300.0, 400.0};

static double shear(const double *v, int zone) {
    double s = v[SCREW_SPEED] / NOMINAL_SPEED;
    return SHEAR_W[zone] * s * s;
}

static double max_power(const double *v, int zone) {
    double pmax = v[HEATER_MAX_POWER] * 1000.0;
    return zone == 0 ? pmax * (1.0 - v[HEATER_FAILURE]) : pmax;
}

/* The residence of the melt in the barrel: longer cycles soak it longer. */
static double residence(double cycle_time) { return cycle_time / (cycle_time + 10.0); }

/* The controller's output for a zone, W, with conditional integration (no wind-up). */
static double heater(double *v, int zone, double h) {
    double e = v[SETPOINT] - v[ZONE1_T + zone];
    double *integral = &v[INTEGRAL1 + zone];
    double pmax = max_power(v, zone);
    double u = KP_W_PER_K * e + *integral;
    double p = u < 0.0 ? 0.0 : (u > pmax ? pmax : u);
    if (h > 0.0 && (u == p || (u > pmax && e < 0.0) || (u < 0.0 && e > 0.0))) {
        *integral += KP_W_PER_K / TI_S * e * h;
    }
    if (v[HEATER_STUCK_ON] * v[HEATER_MAX_POWER] * 1000.0 > p) {
        p = v[HEATER_STUCK_ON] * v[HEATER_MAX_POWER] * 1000.0; /* the contactor is welded */
    }
    return p;
}

static void compute_outputs(double *v, const double *power) {
    v[BARREL_T] = (v[ZONE1_T] + v[ZONE2_T] + v[ZONE3_T]) / N_ZONES;
    v[MELT_T] = v[BARREL_T] + MELT_RISE_K * v[SCREW_SPEED] / NOMINAL_SPEED *
                                  residence(v[CYCLE_TIME]) / residence(28.0);
    v[HEATER_POWER] = (power[0] + power[1] + power[2]) / 1000.0;
}

void model_initialize(ModelData *data) {
    double *v = data->values;
    double power[N_ZONES];
    int z;
    for (z = 0; z < N_ZONES; z++) {
        /* At the set-point with the integral holding the loss the shear does not cover. */
        double need = LOSS_W_PER_K * (v[SETPOINT] - v[AMBIENT]) - shear(v, z);
        v[ZONE1_T + z] = v[SETPOINT];
        v[INTEGRAL1 + z] = need;
        power[z] = heater(v, z, 0.0);
    }
    compute_outputs(v, power);
}

ModelStatus model_step(ModelData *data, double t, double dt, const char **message) {
    double *v = data->values;
    double power[N_ZONES] = {0.0, 0.0, 0.0};
    int steps = (int)ceil(dt / SUBSTEP_S);
    double h = dt / steps;
    int k, z;
    (void)t;
    (void)message;
    for (k = 0; k < steps; k++) {
        for (z = 0; z < N_ZONES; z++) {
            double *temperature = &v[ZONE1_T + z];
            power[z] = heater(v, z, h);
            *temperature += h *
                            (power[z] + shear(v, z) - LOSS_W_PER_K * (*temperature - v[AMBIENT])) /
                            v[ZONE_CAPACITY];
        }
    }
    compute_outputs(v, power);
    return MODEL_OK;
}
