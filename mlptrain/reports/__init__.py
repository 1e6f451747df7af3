"""Drawing only: figures of runs, drawn with matplotlib's Agg renderer (files only, never a window).

    style.py      the look and the atomic save every figure module shares
    arrays.py     the data of each figure as plain arrays (what the tests check)
    figures.py    drawing: arrays -> matplotlib Figure
"""
