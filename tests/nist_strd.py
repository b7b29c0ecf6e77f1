"""Problems from NIST's Statistical Reference Datasets (StRD), nonlinear regression.

Each has the certified parameter values (11 significant digits) and NIST's two
standard starting points: start 1 far from the solution, start 2 closer. The data
are tiny and public domain; they are checked against scipy at tight tolerances in
test_fit.py so that a typo here could not pass silently.
"""

import torch

PROBLEMS = {
    "Misra1a": {
        "difficulty": "lower",
        "f": lambda x, b1, b2: b1 * (1 - torch.exp(-b2 * x)),
        "x": [77.6, 114.9, 141.1, 190.8, 239.9, 289.0, 332.8, 378.4, 434.8, 477.3, 536.8, 593.1, 689.1, 760.0],
        "y": [10.07, 14.73, 17.94, 23.93, 29.61, 35.18, 40.02, 44.82, 50.76, 55.05, 61.01, 66.40, 75.47, 81.78],
        "start1": [500, 1e-4],
        "start2": [250, 5e-4],
        "certified": [2.3894212918e02, 5.5015643181e-04],
    },
    "Misra1b": {
        "difficulty": "lower",
        "f": lambda x, b1, b2: b1 * (1 - (1 + b2 * x / 2) ** (-2)),
        "x": [77.6, 114.9, 141.1, 190.8, 239.9, 289.0, 332.8, 378.4, 434.8, 477.3, 536.8, 593.1, 689.1, 760.0],
        "y": [10.07, 14.73, 17.94, 23.93, 29.61, 35.18, 40.02, 44.82, 50.76, 55.05, 61.01, 66.40, 75.47, 81.78],
        "start1": [500, 1e-4],
        "start2": [300, 2e-4],
        "certified": [3.3799746163e02, 3.9039091287e-04],
    },
    "DanWood": {
        "difficulty": "lower",
        "f": lambda x, b1, b2: b1 * x**b2,
        "x": [1.309, 1.471, 1.490, 1.565, 1.611, 1.680],
        "y": [2.138, 3.421, 3.597, 4.340, 4.882, 5.660],
        "start1": [1, 5],
        "start2": [0.7, 4],
        "certified": [7.6886226176e-01, 3.8604055871e00],
    },
    "BoxBOD": {
        "difficulty": "higher",
        "f": lambda x, b1, b2: b1 * (1 - torch.exp(-b2 * x)),
        "x": [1, 2, 3, 5, 7, 10],
        "y": [109, 149, 149, 191, 213, 224],
        "start1": [1, 1],
        "start2": [100, 0.75],
        "certified": [2.1380940889e02, 5.4723748542e-01],
    },
    "Rat42": {
        "difficulty": "higher",
        "f": lambda x, b1, b2, b3: b1 / (1 + torch.exp(b2 - b3 * x)),
        "x": [9, 14, 21, 28, 42, 57, 63, 70, 79],
        "y": [8.93, 10.8, 18.59, 22.33, 39.35, 56.11, 61.73, 64.62, 67.08],
        "start1": [100, 1, 0.1],
        "start2": [75, 2.5, 0.07],
        "certified": [7.2462237576e01, 2.6180768402e00, 6.7359200066e-02],
    },
    "Rat43": {
        "difficulty": "higher",
        "f": lambda x, b1, b2, b3, b4: b1 / (1 + torch.exp(b2 - b3 * x)) ** (1 / b4),
        "x": list(range(1, 16)),
        "y": [
            16.08,
            33.83,
            65.80,
            97.20,
            191.55,
            326.20,
            386.87,
            520.53,
            590.03,
            651.92,
            724.93,
            699.56,
            689.96,
            637.56,
            717.41,
        ],
        "start1": [100, 10, 1, 1],
        "start2": [700, 5, 0.75, 1.3],
        "certified": [6.9964151270e02, 5.2771253025e00, 7.5962938329e-01, 1.2792483859e00],
    },
    "MGH09": {
        "difficulty": "higher",
        "f": lambda x, b1, b2, b3, b4: b1 * (x**2 + x * b2) / (x**2 + x * b3 + b4),
        "x": [4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625],
        "y": [0.1957, 0.1947, 0.1735, 0.1600, 0.0844, 0.0627, 0.0456, 0.0342, 0.0323, 0.0235, 0.0246],
        "start1": [25, 39, 41.5, 39],
        "start2": [0.25, 0.39, 0.415, 0.39],
        "certified": [1.9280693458e-01, 1.9128232873e-01, 1.2305650693e-01, 1.3606233068e-01],
    },
}
