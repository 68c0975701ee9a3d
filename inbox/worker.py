from fedi.context import Context


class InboxWorker:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def start(self) -> None:
        pass

    async def run_once(self) -> int:
        return 0

    async def stop(self) -> None:
        pass
