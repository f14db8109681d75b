"""Experiments of the paper and of the reproduction report, one command each. Nothing in the
package imports this subpackage."""
