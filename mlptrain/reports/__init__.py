"""Figures of runs, drawn with matplotlib's Agg renderer (files only, never a window).

    style.py      the look and the atomic save every figure module shares
    arrays.py     the data of each figure as plain arrays (what the tests check)
    figures.py    drawing: arrays -> matplotlib Figure
    run_plots.py  every figure of one saved run: `plot_run(run, out_dir, fmt)`
"""
