"""The classic scikit-learn MLP example on iris; only the MLPClassifier import differs.

    python examples/iris_sklearn.py                 # one process
    mpiexec -n 2 python examples/iris_sklearn.py    # two ranks, data-parallel, same accuracy

Every rank runs the whole script (so each prints the last line); mpinn prints its verbose
lines on rank 0 only.
"""
from sklearn.datasets import load_iris
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

from mpinn import MLPClassifier

X, y = load_iris(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)

clf = MLPClassifier(hidden_layer_sizes=(10,), max_iter=1000, alpha=1e-4, solver='sgd', verbose=10,
                    random_state=1)
clf.fit(X_train, y_train)
print(f"Accuracy: {accuracy_score(y_test, clf.predict(X_test)):.4f}")
